"""Chat UIs' side requests, and normal messages that look a bit like them, for the unit and
end-to-end tests of their recognition (proxy/core/identity.is_auxiliary).

`RECORDED`: what a real Open WebUI 0.12.4 sent (tests/fixtures/open_webui_side_requests.json,
excerpted from the recorded trace). `FROM_SOURCES`: the side prompts the trace does not hold,
shaped as Open WebUI's and LibreChat's sources send them (which role carries the prompt, and
its opening words); the rest of each prompt is abridged. `NOT_SIDE`: requests that must stay
conversations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_FIXTURE = Path(__file__).parent / "fixtures" / "open_webui_side_requests.json"


def _recorded() -> list[dict[str, Any]]:
    return json.loads(_FIXTURE.read_text(encoding="utf-8"))["requests"]


RECORDED: list[dict[str, Any]] = _recorded()


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


HISTORY = "<chat_history>\nUSER: What is the capital of France?\nASSISTANT: Paris.\n</chat_history>"

# name -> the messages of one side request
FROM_SOURCES: dict[str, list[dict[str, str]]] = {
    "open-webui query generation": [user(
        "### Task:\nAnalyze the chat history to determine the necessity of generating search"
        " queries, in the given language.\n### Output:\nStrictly return in JSON format:\n"
        f"### Chat History:\n{HISTORY}\n")],
    "open-webui image prompt": [user(
        "### Task:\nGenerate a detailed prompt for am image generation task based on the given"
        f" language and context.\n### Chat History:\n{HISTORY}")],
    "open-webui tool choice": [
        system('Available Tools: [{"name": "get_current_timestamp", "description": "Now"}]\n\n'
               "Your task is to choose and return the correct tool(s) from the list of available"
               " tools based on the query. Follow these guidelines:\n\n- Return only the JSON"
               " object, without any additional text or explanation."),
        user('History:\nUSER: """What time is it?"""\nQuery: What time is it?'),
    ],
    "librechat title (completion)": [user(
        "Provide a concise, 5-word-or-less title for the conversation, using title case"
        " conventions. Only return the title itself.\n\nConversation:\nUser: Plan a trip to"
        " Oslo\nAI: Here is a plan.")],
    "librechat title (structured)": [user(
        "Analyze this conversation and provide:\n1. The detected language of the conversation\n"
        "2. A concise title in the detected language (5 words or less, no punctuation or"
        " quotation)\n\nUser: Plan a trip to Oslo\nAI: Here is a plan.")],
    "librechat title (older clients)": [system(
        "Please generate a concise, 5-word-or-less title for the conversation, using its same"
        ' language, with no punctuation.\n\n||>User:\n"Plan a trip to Oslo"\n||>Response:\n'
        '"Here is a plan."\n\n||>Title:')],
    "librechat title (older clients, Ollama)": [user(
        "Please generate a concise, 5-word-or-less title for the conversation, using its same"
        ' language, with no punctuation.\n\n||>User:\n"Plan a trip to Oslo"\n\n||>Title:')],
}

# name -> messages that are a conversation, whatever they quote
NOT_SIDE: dict[str, list[dict[str, str]]] = {
    "a plain question": [user("What is the capital of France?")],
    "a quoted task heading": [user('What does "### Task:" mean in a prompt?')],
    "a task heading later in a chat": [
        user("Help me write a prompt."), assistant("Sure, what for?"),
        user("### Task:\nSummarise my notes in three bullet points.")],
    "an emoji wish": [user("Your task is to pick an emoji for my cat's birthday card.")],
    "a merge request in a chat": [
        user("Compare these."), assistant("Which ones?"),
        user("You have been provided with a set of responses from various models to the latest"
             ' user query: "mine"')],
    "a title wish": [user("Please generate a title for my essay about cats.")],
    "a system prompt that looks like a task": [
        system("### Task:\nYou are a patient maths tutor."), user("What is 2 + 2?")],
    "open-webui voice mode": [
        system("You are a friendly, concise voice assistant.\n\nEverything you say will be"
               " spoken aloud."), user("How are you?")],
    "a tool list without the task": [
        system("Available Tools: a calculator. Use it when asked."), user("What is 3 * 7?")],
    "open-webui add details": [
        user("First message here"), assistant("Noted (3 words)."), user("Add Details")],
    "a tool round trip": [
        user("Use tool get_current_timestamp"),
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_current_timestamp", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"current_timestamp": 1}'}],
}
