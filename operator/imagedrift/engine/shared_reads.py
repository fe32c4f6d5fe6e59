"""Registry reads every policy shares for an interval: a tag's digest and a repository's
tag list.

Tenants' policies over one app image (twenty namespaces, twenty policies, one
``shop:1.4``) would each resolve the tag and list the repository in every check; the
registry's answer is the same for all of them until the interval passes or a push event
for the repository drops it (the entries live in the checker's ``TtlCache``, keyed by the
repository first, which is what ``invalidate`` drops). One lookup answers everyone: workers
asking at once wait for the one in flight, and a failure answers for a few seconds too, so
a registry that is down is not asked once per policy. A refusal of our own request budget
is no answer of the registry's (nothing was sent) and is never remembered; a 429 is
remembered for as long as the registry asked to wait.

The first time a tag is resolved, its manifest is read by the tag itself (the answer
names the digest) and kept with the documents read by digest
(``registry.manifests.DOCUMENTS``): resolving the tag with a HEAD and then reading the
manifest by digest would cost one request more per app image, and a config read refused
afterwards (a budget spent) is retried without reading the manifest again. Later
resolutions are HEADs: the image behind an unchanged digest is cached already.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from imagedrift.core.refs import ImageRef
from imagedrift.engine.caches import FAILURE_MEMORY, TtlCache
from imagedrift.errors import RegistryError, RegistryThrottled, RequestBudgetSpent
from imagedrift.registry.base import RegistryClient
from imagedrift.registry.manifests import Documents

T = TypeVar("T")


MAX_TAGS_SEEN = 100_000  # tags resolved before (their image is likely cached): HEAD them


class SharedReads:
    def __init__(self, cache: TtlCache, documents: Documents | None = None) -> None:
        self._cache = cache
        self._documents = documents
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._flights: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def tag_digest(self, client: RegistryClient, ref: ImageRef, ttl: float) -> str:
        """The digest ``ref``'s tag points at now (once per ``ttl`` for everyone)."""
        key = (ref.name, "tag digest", ref.tag or "latest")
        return self._read(key, ttl, lambda: self._resolve(client, ref), str)

    def _resolve(self, client: RegistryClient, ref: ImageRef) -> str:
        tag = (ref.name, ref.tag or "latest")
        with self._guard:
            seen = tag in self._seen
        if seen or self._documents is None:
            digest = client.resolve_digest(ref)
        else:
            data, media_type, digest = client.get_manifest(ref)
            self._documents.keep_manifest(client.host, ref.repository, digest, data, media_type)
        with self._guard:  # only once it was read: a failed first read is a first read again
            self._seen[tag] = None
            self._seen.move_to_end(tag)
            while len(self._seen) > MAX_TAGS_SEEN:
                self._seen.popitem(last=False)
        return digest

    def tags(self, client: RegistryClient, ref: ImageRef, ttl: float) -> list[str]:
        """The repository's tags as the registry lists them (once per ``ttl``)."""
        key = (ref.name, "tag list")
        return list(self._read(key, ttl, lambda: tuple(client.list_tags(ref)), tuple))

    def _read(self, key: tuple[str, ...], ttl: float, fetch: Callable[[], T], kind: type[T]) -> T:
        found = self._known(key, kind)
        if found is not None:
            return found
        with self._guard:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            found = self._known(key, kind)  # the one in flight may have answered
            if found is not None:
                return found
            try:
                value = fetch()
            except RequestBudgetSpent:
                raise  # our own budget refused it: nothing was asked, nothing to remember
            except RegistryThrottled as exc:
                # The registry's own 429: everyone waits as long as it asked, no longer.
                self._cache.put(key, exc, min(ttl, FAILURE_MEMORY, max(exc.retry_after, 0.0)))
                raise
            except RegistryError as exc:
                self._cache.put(key, exc, min(ttl, FAILURE_MEMORY))
                raise
            finally:
                with self._guard:
                    self._flights.pop(key, None)
            self._cache.put(key, value, ttl)
            return value

    def _known(self, key: tuple[str, ...], kind: type[T]) -> T | None:
        cached = self._cache.get(key)
        if isinstance(cached, RegistryError):
            raise cached
        return cached if isinstance(cached, kind) else None
