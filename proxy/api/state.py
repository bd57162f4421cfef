"""What the request handlers share: settings, store, upstream client, auth and the service."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..store.base import Store
from ..turns import StatefulService
from ..upstream import UpstreamClient
from .auth import Authenticator


@dataclass
class AppState:
    settings: Settings
    store: Store
    upstream: UpstreamClient
    auth: Authenticator
    service: StatefulService
