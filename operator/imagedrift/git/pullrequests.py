"""Pull requests on GitHub, GitLab and Azure DevOps: found, opened and updated, one per head branch.

Each provider is a thin adapter over its REST API (httpx) mapping its shapes to one
``PullRequest`` and its failures to the git errors: 401/403 -> ``GitAuthError``; 5xx, timeouts
and refused connections -> ``GitError`` (retrying is the caller's). A pull request already
open for the head branch is found and updated, never duplicated; a merged or closed one is
reported as such, so the caller does not recreate a branch that was merged and deleted. The
token travels only in a request header: no URL, error message or repr holds it.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol
from urllib.parse import quote, unquote, urlsplit

import httpx

from imagedrift.errors import GitAuthError, GitError, InvalidSpec

TIMEOUT = 15.0  # seconds for one API call
PAGE = 100  # pull requests read per search; one head branch has a handful
DETAIL = 200  # characters of the server's own words kept in an error message
HEADS = "refs/heads/"

State = Literal["open", "merged", "closed"]


@dataclass(frozen=True)
class PullRequest:
    number: int  # GitHub's number, GitLab's iid, Azure DevOps' pullRequestId
    url: str  # the page a human opens
    head: str  # branch names, without refs/heads/
    base: str
    state: State
    title: str
    body: str = ""


class PullRequests(Protocol):
    """One repository's pull requests, whatever server keeps them."""

    def find(self, head: str, base: str) -> PullRequest | None:
        """The open pull request from ``head`` into ``base``; else the most recent merged or
        closed one; else None."""

    def open(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """A new pull request; one already open for ``head`` is updated and returned instead."""

    def update(self, pr: PullRequest, title: str, body: str) -> PullRequest:
        """``pr`` with a new title and body, as the server now has it."""

    def close(self) -> None:
        """Release the connections."""


def _ssl_context(verify: bool | str | Path) -> ssl.SSLContext | bool:
    """A private CA bundle is trusted in addition to the system roots, never instead."""
    if isinstance(verify, bool):
        return verify
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(verify))
    return context


def _q(segment: str) -> str:
    return quote(segment, safe="")


class _Api:
    """What the three providers share: one client, the error mapping, find and open."""

    provider = ""
    max_body = 65_536  # characters the server keeps in a description
    edit = "PATCH"
    exists = 422  # the status of "a pull request for this head already exists"
    params: ClassVar[Mapping[str, str]] = {}  # in every request's query
    headers: ClassVar[Mapping[str, str]] = {}  # on every request, besides the token's

    def __init__(
        self, endpoint: str, token: str, *, verify: bool | str | Path, timeout: float, web: str
    ) -> None:
        self.endpoint = endpoint  # the pull requests collection, without a query
        self.web = web  # the repository's page
        token = token.strip()  # a Secret's value often ends in a newline
        auth = self._auth(token) if token else {}  # no token: ask anonymously, be refused
        # Every form the secret takes on the wire, to scrub from what a server says back.
        self._secrets = tuple({token, *(v.rpartition(" ")[2] for v in auth.values())} - {""})
        self._http = httpx.Client(
            verify=_ssl_context(verify),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"User-Agent": "imagedrift", **self.headers, **auth},
            follow_redirects=False,  # a redirect could carry the token to another host
        )

    def __repr__(self) -> str:  # never the headers: they hold the token
        return f"{type(self).__name__}({self.endpoint!r})"

    def close(self) -> None:
        self._http.close()

    def find(self, head: str, base: str) -> PullRequest | None:
        found = self._json(self._call("GET", self.endpoint, params=self._query(head, base)))
        items = found.get("value", []) if isinstance(found, dict) else found  # Azure: in value
        pulls = [self._parse(item) for item in items]
        # Filtered again here: some servers ignore a filter they do not know.
        pulls = [p for p in pulls if (p.head, p.base) == (head, base)]
        opened = [p for p in pulls if p.state == "open"]
        if opened:  # the oldest open one: the same answer every time
            return min(opened, key=lambda p: p.number)
        return max(pulls, key=lambda p: p.number, default=None)

    def open(self, head: str, base: str, title: str, body: str) -> PullRequest:
        payload = self._created(head, base, title, self._clip(body))
        response = self._call("POST", self.endpoint, payload=payload, tolerate=(self.exists,))
        if response.status_code == self.exists:
            if "already exists" not in response.text.lower():
                raise GitError(f"{self._where(response)}: {self._detail(response)}")
            existing = self.find(head, base)
            if existing is None or existing.state != "open":
                said = f"{self._where(response)}: a pull request from {head} into {base}"
                raise GitError(f"{said} exists, says the server, but none is open")
            return self.update(existing, title, body)
        return self._parse(self._json(response))

    def update(self, pr: PullRequest, title: str, body: str) -> PullRequest:
        payload = self._edited(title, self._clip(body))
        response = self._call(self.edit, f"{self.endpoint}/{pr.number}", payload=payload)
        return self._parse(self._json(response))

    # -- per provider: the shapes; then what they share ----------------------------------

    def _auth(self, token: str) -> dict[str, str]:
        raise NotImplementedError  # the headers that carry the token

    def _query(self, head: str, base: str) -> dict[str, str]:
        raise NotImplementedError

    def _created(self, head: str, base: str, title: str, body: str) -> dict[str, str]:
        raise NotImplementedError

    def _edited(self, title: str, body: str) -> dict[str, str]:
        return {"title": title, "description": body}

    def _pull(self, item: Mapping[str, Any]) -> PullRequest:
        raise NotImplementedError

    def _call(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, str] | None = None,
        tolerate: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One request; any answer but a success (or a status in ``tolerate``) raises."""
        where = f"{self.provider} {method} {urlsplit(url).path}"
        query = {**(params or {}), **self.params}
        try:
            response = self._http.request(method, url, params=query, json=payload)
        except httpx.TimeoutException:
            raise GitError(f"{where} timed out") from None
        except httpx.HTTPError as exc:
            raise GitError(f"{where} failed: {self._scrub(str(exc))}") from None
        status = response.status_code
        if status in tolerate or (200 <= status < 300 and status != 203):
            return response
        detail = self._detail(response)
        if status == 403 and response.headers.get("x-ratelimit-remaining") == "0":
            raise GitError(f"{where}: 403 rate limited ({detail})")
        if status in (401, 403, 203):  # 203: Azure DevOps' sign-in page, for no credentials
            raise GitAuthError(f"{where}: {status} the server refused the token ({detail})")
        if status == 404:
            raise GitError(f"{where}: 404 no such repository, or the token cannot see it")
        raise GitError(f"{where}: {status} {detail}")

    def _where(self, response: httpx.Response) -> str:
        return f"{self.provider} {response.request.method} {response.request.url.path}"

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise GitError(f"{self._where(response)}: the answer is not JSON") from None

    def _parse(self, item: Any) -> PullRequest:
        try:
            return self._pull(item)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GitError(f"{self.provider}: a pull request without {exc}") from None

    def _detail(self, response: httpx.Response) -> str:
        """The server's own words, if it sent some, with no secret in them."""
        try:
            said = response.json()
        except ValueError:
            said = response.reason_phrase
        if isinstance(said, dict):
            said = " ".join(str(said[k]) for k in ("message", "error", "errors") if said.get(k))
        return self._scrub(str(said))[:DETAIL]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _clip(self, body: str) -> str:
        cut = "\n\n(cut at the server's limit)"
        return body if len(body) <= self.max_body else body[: self.max_body - len(cut)] + cut


class GitHub(_Api):
    """GitHub's REST API v3 (github.com, or GitHub Enterprise at ``api_base``)."""

    provider = "GitHub"

    headers: ClassVar[Mapping[str, str]] = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }

    def _auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _query(self, head: str, base: str) -> dict[str, str]:
        owner = unquote(self.endpoint.rsplit("/", 3)[-3])  # .../repos/{owner}/{repo}/pulls
        return {"head": f"{owner}:{head}", "base": base, "state": "all", "per_page": str(PAGE)}

    def _created(self, head: str, base: str, title: str, body: str) -> dict[str, str]:
        return {"title": title, "head": head, "base": base, "body": body}

    def _edited(self, title: str, body: str) -> dict[str, str]:
        return {"title": title, "body": body}

    def _pull(self, item: Mapping[str, Any]) -> PullRequest:
        merged: State = "merged" if item.get("merged_at") else "closed"
        return PullRequest(
            int(item["number"]),
            str(item["html_url"]),
            str(item["head"]["ref"]),
            str(item["base"]["ref"]),
            "open" if item["state"] == "open" else merged,
            str(item["title"]),
            str(item.get("body") or ""),
        )


class GitLab(_Api):
    """GitLab's REST API v4 merge requests (gitlab.com or a self-managed server)."""

    provider = "GitLab"
    max_body = 1_000_000
    edit = "PUT"
    exists = 409

    def _auth(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token}

    def _query(self, head: str, base: str) -> dict[str, str]:
        return {"source_branch": head, "target_branch": base, "state": "all", "per_page": str(PAGE)}

    def _created(self, head: str, base: str, title: str, body: str) -> dict[str, str]:
        return {"source_branch": head, "target_branch": base, **self._edited(title, body)}

    def _pull(self, item: Mapping[str, Any]) -> PullRequest:
        states: dict[str, State] = {"merged": "merged", "closed": "closed"}
        return PullRequest(
            int(item["iid"]),
            str(item["web_url"]),
            str(item["source_branch"]),
            str(item["target_branch"]),
            states.get(str(item["state"]), "open"),  # opened, or locked while it merges
            str(item["title"]),
            str(item.get("description") or ""),
        )


class AzureDevOps(_Api):
    """Azure Repos' REST API 7.1 (dev.azure.com, *.visualstudio.com, or a server)."""

    provider = "Azure DevOps"
    max_body = 4_000
    exists = 409
    params: ClassVar[Mapping[str, str]] = {"api-version": "7.1"}

    def _auth(self, token: str) -> dict[str, str]:
        basic = base64.b64encode(f":{token}".encode()).decode()  # a PAT, with no user
        return {"Authorization": f"Basic {basic}"}

    def _query(self, head: str, base: str) -> dict[str, str]:
        criteria = {"sourceRefName": HEADS + head, "targetRefName": HEADS + base, "status": "all"}
        return {**{f"searchCriteria.{k}": v for k, v in criteria.items()}, "$top": str(PAGE)}

    def _created(self, head: str, base: str, title: str, body: str) -> dict[str, str]:
        refs = {"sourceRefName": HEADS + head, "targetRefName": HEADS + base}
        return {**refs, **self._edited(title, body)}

    def _pull(self, item: Mapping[str, Any]) -> PullRequest:
        states: dict[str, State] = {"completed": "merged", "abandoned": "closed"}
        number = int(item["pullRequestId"])
        return PullRequest(
            number,
            f"{self.web}/pullrequest/{number}",
            str(item["sourceRefName"]).removeprefix(HEADS),
            str(item["targetRefName"]).removeprefix(HEADS),
            states.get(str(item["status"]), "open"),  # active
            str(item["title"]),
            str(item.get("description") or ""),
        )


def for_repository(
    url: str,
    token: str,
    api_base: str = "",
    *,
    verify: bool | str | Path = True,
    timeout: float = TIMEOUT,
    provider: str = "",
) -> PullRequests:
    """The pull requests of the repository cloned from ``url`` (https, ssh:// or scp-like).

    The provider follows from the host (github.com, gitlab.com, dev.azure.com and
    ``*.visualstudio.com``); a self-hosted server names it in ``provider`` ("github",
    "gitlab", "azure"). ``api_base`` replaces the API's origin (``https://api.github.com``
    for GitHub, the server's origin for GitLab and Azure DevOps): GitHub Enterprise's
    ``https://host/api/v3``, a test server. ``verify`` is a CA bundle to trust as well, or a
    bool. Raises InvalidSpec when the URL names no repository this can tell apart.
    """
    scheme, host, segments = _split(url)
    kind = provider.lower() or _provider(host, segments)
    origin = f"{'http' if scheme == 'http' else 'https'}://{host}"
    kinds: dict[str, type[_Api]] = {"github": GitHub, "gitlab": GitLab, "azure": AzureDevOps}
    if kind == "github":
        if len(segments) != 2:
            raise InvalidSpec(f"a GitHub repository is owner/name, not {'/'.join(segments)!r}")
        api = api_base or ("https://api.github.com" if host == "github.com" else f"{origin}/api/v3")
        owner, repo = (_q(s) for s in segments)
        endpoint, web = f"{api.rstrip('/')}/repos/{owner}/{repo}/pulls", f"{origin}/{owner}/{repo}"
    elif kind == "gitlab":
        project = "/".join(segments).split("/-/", 1)[0]
        api = f"{(api_base or origin).rstrip('/')}/api/v4/projects/{_q(project)}"
        endpoint, web = f"{api}/merge_requests", f"{origin}/{project}"
    elif kind == "azure":
        web_origin, collection, project, repo = _azure(origin, segments)
        api = f"{(api_base or web_origin).rstrip('/')}{collection}/{_q(project)}"
        endpoint = f"{api}/_apis/git/repositories/{_q(repo)}/pullrequests"
        web = f"{web_origin}{collection}/{_q(project)}/_git/{_q(repo)}"
    else:
        raise InvalidSpec(f"cannot tell which pull request API {host} speaks: name the provider")
    return kinds[kind](endpoint, token, verify=verify, timeout=timeout, web=web)


def _split(url: str) -> tuple[str, str, list[str]]:
    """(scheme, host[:port], unquoted path segments without .git) of a clone URL."""
    if "://" in url:
        parts = urlsplit(url)
        scheme, netloc, path = parts.scheme, parts.netloc, parts.path
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo and scheme.startswith("http"):
            raise InvalidSpec("credentials in a repository URL are refused: use a Secret")
        host = hostport if scheme.startswith("http") else (parts.hostname or "")
    else:  # scp-like: git@host:owner/repo
        netloc, _, path = url.partition(":")
        scheme, host = "ssh", netloc.rpartition("@")[2]
    segments = [unquote(s) for s in path.strip("/").split("/") if s]
    if segments and segments[-1].endswith(".git"):
        segments[-1] = segments[-1][:-4]
    if not host or not segments:
        raise InvalidSpec("the repository URL names no host and path")
    return scheme, host.lower(), segments


def _provider(host: str, segments: list[str]) -> str:
    name = host.split(":", 1)[0]
    if name in ("github.com", "www.github.com"):
        return "github"
    if name == "gitlab.com":
        return "gitlab"
    azure = name in ("dev.azure.com", "ssh.dev.azure.com") or name.endswith(".visualstudio.com")
    return "azure" if azure or "_git" in segments else ""


def _azure(origin: str, segments: list[str]) -> tuple[str, str, str, str]:
    """(web origin, collection path, project, repository) of an Azure Repos clone URL."""
    if segments[0] == "v3" and len(segments) == 4:  # ssh: v3/{org}/{project}/{repo}
        org = segments[1]
        if origin.endswith(".visualstudio.com"):  # {org}@vs-ssh.visualstudio.com
            return f"https://{_q(org)}.visualstudio.com", "", segments[2], segments[3]
        return "https://dev.azure.com", f"/{_q(org)}", segments[2], segments[3]
    if "_git" in segments[1:-1]:  # https: [{collection}/]{project}/_git/{repo}
        at = segments.index("_git")
        collection = "".join(f"/{_q(s)}" for s in segments[: at - 1])
        return origin, collection, segments[at - 1], segments[at + 1]
    raise InvalidSpec(f"no {{project}}/_git/{{repo}} in the Azure Repos URL {'/'.join(segments)}")
