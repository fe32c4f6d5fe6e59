"""Pull-request API servers over TLS on 127.0.0.1: GitHub, GitLab and Azure DevOps shapes.

Each server keeps one repository's pull requests in memory and speaks the requests and
answers ``imagedrift.git.pullrequests`` uses, as the providers document them:

- GitHub REST v3: ``GET|POST /repos/{owner}/{repo}/pulls`` (``head=owner:branch``,
  ``base``, ``state``), ``PATCH .../pulls/{number}``; ``Authorization: Bearer``; a second
  open pull request for one head and base is ``422 Validation Failed``;
- GitLab v4: ``GET|POST /api/v4/projects/{url-encoded path}/merge_requests``
  (``source_branch``, ``target_branch``, ``state``), ``PUT .../merge_requests/{iid}``;
  ``PRIVATE-TOKEN``; a second open one is ``409``;
- Azure DevOps 7.1: ``GET|POST /{org}/{project}/_apis/git/repositories/{repo}/pullrequests``
  (``searchCriteria.*``, ``api-version`` required), ``PATCH .../pullrequests/{id}``; Basic
  auth with a PAT as the password; no credentials at all get ``203`` and a sign-in page, as
  the real service answers; a second active one is ``409 TF401179``.

Every request is recorded (method, raw path, query, headers with the credential's value
replaced, JSON body, status, whether the credential was right). Tests can merge or close a
pull request as a human would, and fail or stall the next N requests.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.harness import leaks
from tests.harness.tlsca import QuietHandler, TestCA, TlsServer

REDACTED = "<redacted>"
Answer = tuple[int, Any]  # (status, JSON payload)


@dataclass
class StoredPr:
    number: int
    head: str
    base: str
    title: str
    body: str
    state: str = "open"  # open | merged | closed, whatever the provider calls them
    merged_at: str = ""


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # as sent, percent-encoding kept
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; the credential's value is REDACTED
    body: Any
    status: int
    authorized: bool


@dataclass
class _Fault:
    status: int
    remaining: int
    delay: float = 0.0


@dataclass
class PrServer:
    """One provider's API for one repository; subclasses give the shapes. Thread-safe."""

    ca: TestCA
    token: str = field(default_factory=lambda: "pr-token-" + secrets.token_urlsafe(24), repr=False)
    provider = ""
    repository_url = ""  # the clone URL the adapter is built for

    def __post_init__(self) -> None:
        leaks.remember(self.token, f"{self.provider} pull request API token")
        self._lock = threading.Lock()
        self._pulls: dict[int, StoredPr] = {}
        self._log: list[Recorded] = []
        self._faults: list[_Fault] = []
        self._busy = 0  # requests being answered
        self._server = TlsServer(_make_handler(self), self.ca, name=f"fake-{self.provider}")

    # -- lifecycle and knobs -------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> PrServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        with self._lock:
            self._pulls.clear()
            self._log.clear()
            self._faults.clear()

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until no request is being answered: a stalled one the client gave
        up on would otherwise land in the next test's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._busy:
                    return True
            time.sleep(0.02)
        return False

    def fail(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` requests with ``status`` (before any other check)."""
        with self._lock:
            self._faults.append(_Fault(status, count))

    def stall(self, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` requests ``seconds`` before answering them normally."""
        with self._lock:
            self._faults.append(_Fault(0, count, seconds))

    def merge(self, number: int) -> None:
        """A human merged it (the head branch may be deleted with it)."""
        with self._lock:
            self._pulls[number].state = "merged"
            self._pulls[number].merged_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def close(self, number: int) -> None:
        """A human closed it without merging."""
        with self._lock:
            self._pulls[number].state = "closed"

    # -- what happened -------------------------------------------------------------------
    def pulls(self) -> list[StoredPr]:
        with self._lock:
            return [replace(pr) for pr in sorted(self._pulls.values(), key=lambda p: p.number)]

    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._log)

    # -- serving -------------------------------------------------------------------------
    def answer(
        self, method: str, raw_path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, Any, str]:
        """(status, payload, content type) for one request, recorded."""
        with self._lock:
            self._busy += 1
        try:
            return self._answer(method, raw_path, query, headers, body)
        finally:
            with self._lock:
                self._busy -= 1

    def _answer(
        self, method: str, raw_path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> tuple[int, Any, str]:
        fault = self._take_fault()
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        authorized, shown = self.check(headers)
        content_type = "application/json"
        if fault is not None and fault.status:
            status, payload = fault.status, {"message": f"injected {fault.status}"}
        elif not authorized:
            status, payload = self.refuse(headers)
            content_type = "text/html" if status == 203 else content_type
        else:
            segments = raw_path.strip("/").split("/")
            with self._lock:
                status, payload = self.route(method, segments, query, body)
        with self._lock:
            self._log.append(Recorded(method, raw_path, query, shown, body, status, authorized))
        return status, payload, content_type

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0:
                    fault.remaining -= 1
                    return fault
        return None

    def _new(self, head: str, base: str, title: str, body: str) -> StoredPr:
        pr = StoredPr(max(self._pulls, default=0) + 1, head, base, title, body)
        self._pulls[pr.number] = pr
        return pr

    def _open_for(self, head: str, base: str) -> StoredPr | None:
        return next(
            (p for p in self._pulls.values() if (p.head, p.base, p.state) == (head, base, "open")),
            None,
        )

    def _listed(self, head: str, base: str, states: set[str]) -> list[StoredPr]:
        """Newest first, as the providers list them."""
        found = [
            p
            for p in self._pulls.values()
            if (not head or p.head == head) and (not base or p.base == base) and p.state in states
        ]
        return sorted(found, key=lambda p: -p.number)

    # -- per provider --------------------------------------------------------------------
    def check(self, headers: dict[str, str]) -> tuple[bool, dict[str, str]]:
        """Whether the credential is right, and the headers with its value hidden."""
        raise NotImplementedError

    def refuse(self, headers: dict[str, str]) -> Answer:
        return 401, {"message": "Bad credentials"}

    def route(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> Answer:
        raise NotImplementedError


def _hide(headers: dict[str, str], name: str) -> dict[str, str]:
    """``name``'s value replaced, its scheme kept (``Bearer <redacted>``)."""
    shown = dict(headers)
    if name in shown:
        scheme, _, value = shown[name].partition(" ")
        shown[name] = f"{scheme} {REDACTED}" if value else REDACTED
    return shown


def _text(body: Any, key: str) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def _edit(pr: StoredPr, body: Any, description: str) -> StoredPr:
    """``pr`` with the title and description ``body`` sets (a key absent: unchanged)."""
    if isinstance(body, dict):
        pr.title = _text(body, "title") or pr.title
        pr.body = _text(body, description) if description in body else pr.body
    return pr


class FakeGitHub(PrServer):
    provider = "github"
    owner, repo = "acme", "app"
    repository_url = "https://github.com/acme/app.git"

    def check(self, headers: dict[str, str]) -> tuple[bool, dict[str, str]]:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        ok = scheme.lower() in ("bearer", "token") and value == self.token
        return ok, _hide(headers, "authorization")

    def render(self, pr: StoredPr) -> dict[str, Any]:
        return {
            "number": pr.number,
            "html_url": f"https://github.com/{self.owner}/{self.repo}/pull/{pr.number}",
            "state": "open" if pr.state == "open" else "closed",
            "merged_at": pr.merged_at or None,
            "title": pr.title,
            "body": pr.body,
            "head": {"ref": pr.head, "label": f"{self.owner}:{pr.head}"},
            "base": {"ref": pr.base},
        }

    def route(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> Answer:
        if segments[:4] != ["repos", self.owner, self.repo, "pulls"] or len(segments) > 5:
            return 404, {"message": "Not Found"}
        if len(segments) == 4 and method == "GET":
            owner, _, head = query.get("head", "").rpartition(":")
            if owner and owner != self.owner:
                return 200, []
            wanted = query.get("state", "open")
            states = {"open"} if wanted == "open" else {"merged", "closed"}
            states |= {"open"} if wanted == "all" else set()
            return 200, [self.render(p) for p in self._listed(head, query.get("base", ""), states)]
        if len(segments) == 4 and method == "POST":
            head, base, title = _text(body, "head"), _text(body, "base"), _text(body, "title")
            if not (head and base and title):
                return 422, {"message": "Validation Failed", "errors": [{"code": "missing_field"}]}
            if self._open_for(head, base):
                said = f"A pull request already exists for {self.owner}:{head}."
                return 422, {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "code": "custom", "message": said}],
                }
            return 201, self.render(self._new(head, base, title, _text(body, "body")))
        if len(segments) == 5 and method == "PATCH":
            pr = self._pulls.get(int(segments[4])) if segments[4].isdigit() else None
            if pr is None:
                return 404, {"message": "Not Found"}
            return 200, self.render(_edit(pr, body, "body"))
        return 404, {"message": "Not Found"}


class FakeGitLab(PrServer):
    provider = "gitlab"
    project = "acme/platform/app"  # a subgroup: the id is the url-encoded full path
    repository_url = "https://gitlab.com/acme/platform/app.git"
    STATES: ClassVar[dict[str, str]] = {"open": "opened", "merged": "merged", "closed": "closed"}

    def check(self, headers: dict[str, str]) -> tuple[bool, dict[str, str]]:
        ok = headers.get("private-token", "") == self.token
        return ok, _hide(headers, "private-token")

    def refuse(self, headers: dict[str, str]) -> Answer:
        return 401, {"message": "401 Unauthorized"}

    def render(self, pr: StoredPr) -> dict[str, Any]:
        return {
            "iid": pr.number,
            "web_url": f"https://gitlab.com/{self.project}/-/merge_requests/{pr.number}",
            "state": self.STATES[pr.state],
            "title": pr.title,
            "description": pr.body,
            "source_branch": pr.head,
            "target_branch": pr.base,
        }

    def route(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> Answer:
        # The project id is one segment: its slashes arrive encoded (%2F).
        prefix = ["api", "v4", "projects", self.project, "merge_requests"]
        if [unquote(s) for s in segments[:5]] != prefix or len(segments) > 6:
            return 404, {"message": "404 Project Not Found"}
        if len(segments) == 5 and method == "GET":
            wanted = query.get("state", "all")
            states = {s for s, name in self.STATES.items() if wanted in ("all", name)}
            found = self._listed(
                query.get("source_branch", ""), query.get("target_branch", ""), states
            )
            return 200, [self.render(p) for p in found]
        if len(segments) == 5 and method == "POST":
            head, base = _text(body, "source_branch"), _text(body, "target_branch")
            title = _text(body, "title")
            if not (head and base and title):
                return 400, {"error": "source_branch, target_branch and title are required"}
            existing = self._open_for(head, base)
            if existing:
                said = "Another open merge request already exists for this source branch"
                said += f": !{existing.number}"
                return 409, {"message": [said]}
            return 201, self.render(self._new(head, base, title, _text(body, "description")))
        if len(segments) == 6 and method == "PUT":
            pr = self._pulls.get(int(segments[5])) if segments[5].isdigit() else None
            if pr is None:
                return 404, {"message": "404 Not found"}
            return 200, self.render(_edit(pr, body, "description"))
        return 405, {"message": "405 Method Not Allowed"}


class FakeAzureDevOps(PrServer):
    provider = "azure"
    org, project, repo = "acme", "Platform Team", "app"
    repository_url = "https://acme@dev.azure.com/acme/Platform%20Team/_git/app"
    STATES: ClassVar[dict[str, str]] = {
        "open": "active",
        "merged": "completed",
        "closed": "abandoned",
    }
    HEADS = "refs/heads/"

    def check(self, headers: dict[str, str]) -> tuple[bool, dict[str, str]]:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        try:
            password = base64.b64decode(value).decode().partition(":")[2]
        except ValueError:
            password = ""
        ok = scheme.lower() == "basic" and password == self.token
        return ok, _hide(headers, "authorization")

    def refuse(self, headers: dict[str, str]) -> Answer:
        if "authorization" not in headers:  # the real service sends its sign-in page
            return 203, "<html><body>Azure DevOps Services | Sign In</body></html>"
        return 401, {"message": "TF400813: The user is not authorized to access this resource."}

    def render(self, pr: StoredPr) -> dict[str, Any]:
        web = f"https://dev.azure.com/{self.org}/{quote(self.project)}/_git/{self.repo}"
        return {
            "pullRequestId": pr.number,
            "status": self.STATES[pr.state],
            "title": pr.title,
            "description": pr.body,
            "sourceRefName": self.HEADS + pr.head,
            "targetRefName": self.HEADS + pr.base,
            "url": f"{self.url}/{self.org}/_apis/git/pullRequests/{pr.number}",
            "repository": {"name": self.repo, "webUrl": web},
        }

    def route(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> Answer:
        prefix = [self.org, self.project, "_apis", "git", "repositories", self.repo, "pullrequests"]
        if [unquote(s) for s in segments[:7]] != prefix or len(segments) > 8:
            return 404, {"message": "TF200016: The project or repository does not exist."}
        if query.get("api-version") != "7.1":
            return 400, {"message": "The api-version 7.1 is required.", "typeKey": "VssException"}
        if len(segments) == 7 and method == "GET":
            wanted = query.get("searchCriteria.status", "active")
            states = {s for s, name in self.STATES.items() if wanted in ("all", name)}
            head = query.get("searchCriteria.sourceRefName", "").removeprefix(self.HEADS)
            base = query.get("searchCriteria.targetRefName", "").removeprefix(self.HEADS)
            found = [self.render(p) for p in self._listed(head, base, states)]
            return 200, {"value": found, "count": len(found)}
        if len(segments) == 7 and method == "POST":
            head = _text(body, "sourceRefName").removeprefix(self.HEADS)
            base = _text(body, "targetRefName").removeprefix(self.HEADS)
            title = _text(body, "title")
            if not (head and base and title):
                return 400, {"message": "sourceRefName, targetRefName and title are required"}
            if self._open_for(head, base):
                return 409, {
                    "message": "TF401179: An active pull request for the source and target "
                    "branch already exists.",
                    "typeKey": "GitPullRequestExistsException",
                }
            return 201, self.render(self._new(head, base, title, _text(body, "description")))
        if len(segments) == 8 and method == "PATCH":
            pr = self._pulls.get(int(segments[7])) if segments[7].isdigit() else None
            if pr is None:
                return 404, {"message": "TF401180: The requested pull request was not found."}
            return 200, self.render(_edit(pr, body, "description"))
        return 405, {"message": "Method not allowed"}


PROVIDERS: dict[str, type[PrServer]] = {
    "github": FakeGitHub,
    "gitlab": FakeGitLab,
    "azure": FakeAzureDevOps,
}


def _make_handler(server: PrServer) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            raw = self.read_body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload, content_type = server.answer(
                self.command, parts.path, query, headers, body
            )
            if content_type == "application/json":
                self.send_json(status, payload)
            else:
                self.send_bytes(status, str(payload).encode(), content_type=content_type)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    return Handler
