"""Which provider sends a message.

Push goes to the provider of the device's platform (apns or fcm) when that is
configured for push; email and SMS go to the first provider of the channel's
ordered list that is not unavailable. Availability is a check given at
construction (the worker passes its circuit breakers' ``available``,
workers/breaker/view.py) and never changed afterwards: a Router is built with
what it asks. A generic provider (console, noop, record) in a list serves any
message of it.
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
        self._available = available

    def candidates(self, message: Message) -> list[Provider]:
        """The providers that may send ``message``, in order of preference."""
        names = self._candidate_names(message.channel, message.device_platform)
        return [self.providers[n] for n in names]

    def _candidate_names(self, channel: str, device_platform: str | None) -> tuple[str, ...]:
        names = self.routes.get(channel, ())
        if channel == "push":
            if device_platform is not None and device_platform in names:
                return (device_platform,)  # a token belongs to one platform
            names = tuple(n for n in names if n not in PUSH_PLATFORMS)
        return names

    def provider_for(self, channel: str, device_platform: str | None = None) -> str | None:
        """The name of the provider :meth:`choose` would pick now for such a message, or None.

        For admission checks that run before a message is rendered (the per-provider
        rate limit): the answer depends only on the channel and, for push, the
        device's platform.
        """
        for name in self._candidate_names(channel, device_platform):
            provider = self.providers[name]
            if self._available(provider.name):
                return provider.name
        return None

    def choose(self, message: Message) -> Provider | None:
        """The provider to use now, or None if every candidate is unavailable."""
        for provider in self.candidates(message):
            if self._available(provider.name):
                return provider
        return None

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
