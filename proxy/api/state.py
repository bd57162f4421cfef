"""What the request handlers share: settings, store, upstream client, auth and the service."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..config import Settings
from ..store.base import Store
from ..turn import StatefulService
from ..upstream import UpstreamClient
from .auth import Authenticator
from .responses.background import BackgroundResponses
from .storage_full import StorageHealth


@dataclass
class AppState:
    settings: Settings
    store: Store
    upstream: UpstreamClient
    auth: Authenticator
    service: StatefulService
    auxiliary_patterns: list[re.Pattern[str]] = field(default_factory=list)
    auxiliary_system_patterns: list[re.Pattern[str]] = field(default_factory=list)
    background_responses: BackgroundResponses = field(default_factory=BackgroundResponses)
    storage: StorageHealth = field(default_factory=StorageHealth)  # a full disk: 507, not ready

    def __post_init__(self) -> None:
        url = self.settings.database.url
        if url.startswith("sqlite:"):
            from ..store import sqlite_path

            self.storage = StorageHealth(sqlite_path(url))
        identity = self.settings.identity
        self.auxiliary_patterns = [re.compile(p) for p in identity.auxiliary_patterns]
        self.auxiliary_system_patterns = [re.compile(p) for p in identity.auxiliary_system_patterns]
