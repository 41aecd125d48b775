"""Which provider sends a message.

Push goes to the provider of the device's platform (apns or fcm) when that is
configured for push; email and SMS go to the first provider of the channel's
ordered list that is not unavailable (the circuit breaker decides that). A
generic provider (console, noop, record) in a list serves any message of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from outbox.providers.base import Message, Provider

PUSH_PLATFORMS = ("apns", "fcm")


class Router:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        routes: Mapping[str, Sequence[str]],
        available: Callable[[str], bool] = lambda name: True,
    ) -> None:
        missing = sorted({n for names in routes.values() for n in names} - set(providers))
        if missing:
            raise ValueError(f"routes name providers that are not built: {missing}")
        self.providers = dict(providers)
        self.routes = {channel: tuple(names) for channel, names in routes.items()}
        self.available = available

    def candidates(self, message: Message) -> list[Provider]:
        """The providers that may send ``message``, in order of preference."""
        names = self.routes.get(message.channel, ())
        if message.channel == "push":
            if message.device_platform in names:
                return [self.providers[message.device_platform]]  # a token belongs to one platform
            names = tuple(n for n in names if n not in PUSH_PLATFORMS)
        return [self.providers[n] for n in names]

    def choose(self, message: Message) -> Provider | None:
        """The provider to use now, or None if every candidate is unavailable."""
        for provider in self.candidates(message):
            if self.available(provider.name):
                return provider
        return None

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
