"""Which digest the policy's base means now: its tag, the newest tag in a semver range, or
the newest patch tag ACR's continuous patching published, resolved once per interval for
every policy that names the same base (``caches.BaseWatcher``)."""

from __future__ import annotations

from imagedrift.core import patchtags, tagselect
from imagedrift.core.refs import ImageRef
from imagedrift.core.spec import BaseSpec
from imagedrift.core.tagkinds import policy_from_spec
from imagedrift.engine.caches import BaseObservation, BaseWatcher, ImageCache
from imagedrift.engine.ports import RegistryPort
from imagedrift.errors import NotFound
from imagedrift.registry.base import RegistryClient


def _tags(client: RegistryClient, image: ImageRef) -> list[str]:
    """The repository's tags that are tags: what the registry lists, minus any name the OCI
    grammar does not allow (``tagselect.well_formed``), for lookups that note nothing."""
    return tagselect.well_formed(client.list_tags(image))[0]


class BaseLookup:
    def __init__(self, registries: RegistryPort, images: ImageCache, bases: BaseWatcher) -> None:
        self.registries = registries
        self.images = images
        self.bases = bases

    def observe(self, base: BaseSpec, clock: float) -> BaseObservation:
        return self.bases.observe(
            base.key, base.interval, lambda prev: self._lookup(base, prev, clock)
        )

    def _lookup(
        self, base: BaseSpec, previous: BaseObservation | None, clock: float
    ) -> BaseObservation:
        client = self.registries.client_for(base.image.registry, base)
        tag = base.tag
        if base.semver_range:
            listed = _tags(client, base.image)
            tag = policy_from_spec({"semver": {"range": base.semver_range}}).latest(listed) or ""
            if not tag:
                raise NotFound(
                    f"no tag of {base.image.name} satisfies {base.semver_range!r}",
                    registry=base.image.registry,
                )
        elif base.patches == patchtags.INCREMENTAL:
            # One request more than a plain tag: the list says which patch is the newest.
            tag = patchtags.newest_incremental(_tags(client, base.image), base.tag) or ""
            if not tag:
                raise NotFound(
                    f"neither {base.image.name}:{base.tag} nor a patch tag of it "
                    f"({base.tag}-1 … {base.tag}-{patchtags.MAX_PATCH}) exists",
                    registry=base.image.registry,
                )
        if base.patches == patchtags.FLOATING:
            # The floating patch tag when ACR made one, else the original.
            try:
                tag = patchtags.floating(base.tag)
                digest = client.resolve_digest(base.image.with_tag(tag))
            except NotFound:
                tag = base.tag
                digest = client.resolve_digest(base.image.with_tag(tag))
        else:
            digest = client.resolve_digest(base.image.with_tag(tag))
        ref = base.image.with_tag(tag)
        if previous and previous.image.digest == digest and previous.ref.tag == tag:
            return BaseObservation(previous.ref, previous.image, clock)
        image = self.images.get(client, base.image.with_digest(digest))
        return BaseObservation(ImageRef(ref.registry, ref.repository, tag, digest), image, clock)
