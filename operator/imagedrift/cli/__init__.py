"""``imagedrift``: the SRE's command line for ImagePolicies and the workloads they roll.

Commands (each takes ``-o table|json|yaml``, ``--kubeconfig`` and ``--context``)::

    imagedrift status [POLICY]              what each policy saw and is doing
    imagedrift lineage KIND/NAME [-n NS]    per container: image, base digest, rollout history
    imagedrift plan POLICY [--ca-bundle F]  dry run of the next check (writes nothing)
    imagedrift pause POLICY                 spec.rollout.suspend=true
    imagedrift resume POLICY                spec.rollout.suspend=false
    imagedrift pause KIND/NAME [-n NS]      annotation imagedrift.io/paused=true
    imagedrift resume KIND/NAME [-n NS]     removes that annotation

Exit codes: 0 ok; 1 not found or bad usage; 2 the Kubernetes API or a registry failed.
Messages go to stderr, documents to stdout.

JSON/YAML output is a versioned document, ``apiVersion: cli.imagedrift.io/v1`` with a
``kind`` per command (``PolicyStatusList``, ``WorkloadLineage``, ``Plan``, ``PauseResult``).
Fields are only ever added within a version; see the README's CLI reference for each field.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from imagedrift.cli import lineage as lineage_cmd
from imagedrift.cli import pause as pause_cmd
from imagedrift.cli import plan as plan_cmd
from imagedrift.cli import render
from imagedrift.cli import status as status_cmd
from imagedrift.cli.cluster import (
    EXIT_API,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    Cluster,
    parse_workload,
)
from imagedrift.core.spec import PolicySpec, parse_policy
from imagedrift.errors import ImageDriftError, InvalidSpec

__all__ = ["main"]

Table = Callable[[Mapping[str, Any], datetime, int], str]


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 1 (2 is reserved for API failures)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_NOT_FOUND, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-o", "--output", choices=render.FORMATS, default="table", help="output format"
    )
    common.add_argument("--kubeconfig", help="path to the kubeconfig (default $KUBECONFIG)")
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument(
        "--operator-namespace",
        default=os.environ.get("IMAGEDRIFT_NAMESPACE", "imagedrift-system"),
        help="namespace of the operator, where registry Secrets live (default %(default)s)",
    )
    parser = _Parser(
        prog="imagedrift",
        description="Inspect and steer imagedrift ImagePolicies and the workloads they roll.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("status", parents=[common], help="policies: base, counts, conditions")
    p.add_argument("policy", nargs="?", help="one ImagePolicy (default all)")

    p = commands.add_parser(
        "lineage", parents=[common], help="a workload's images, base digests and rollouts"
    )
    p.add_argument("workload", help="KIND/NAME: deploy/web, sts/db, ds/agent, cj/nightly")
    p.add_argument("-n", "--namespace", help="namespace (default the context's)")

    p = commands.add_parser(
        "plan", parents=[common], help="dry run of the policy's next check (changes nothing)"
    )
    p.add_argument("policy", help="the ImagePolicy")
    p.add_argument("--ca-bundle", help="PEM CA bundle for registries with a private CA")

    for name, verb in (("pause", "pause"), ("resume", "resume")):
        p = commands.add_parser(
            name, parents=[common], help=f"{verb} a policy (POLICY) or one workload (KIND/NAME)"
        )
        p.add_argument("target", help="POLICY, or KIND/NAME of a workload")
        p.add_argument("-n", "--namespace", help="the workload's namespace (default the context's)")
    return parser


def _width() -> int:
    return max(60, min(shutil.get_terminal_size((render.DEFAULT_WIDTH, 24)).columns, 160))


def _emit(doc: Mapping[str, Any], fmt: str, table: Table) -> None:
    now = datetime.now(UTC)
    sys.stdout.write(render.render(doc, fmt, lambda d: table(d, now, _width())))


def _status(args: argparse.Namespace, cluster: Cluster) -> int:
    bodies = [cluster.get_policy(args.policy)] if args.policy else cluster.list_policies()
    _emit(status_cmd.build(bodies), args.output, status_cmd.table)
    return EXIT_OK


def _governing(
    cluster: Cluster, obj: Mapping[str, Any]
) -> list[tuple[PolicySpec, Mapping[str, Any]]]:
    from imagedrift.core.workloads import selected

    found: list[tuple[PolicySpec, Mapping[str, Any]]] = []
    for body in cluster.list_policies():
        name = str((body.get("metadata") or {}).get("name", ""))
        try:
            spec = parse_policy(name, body.get("spec") or {})
        except InvalidSpec:
            continue  # an invalid policy governs nothing (it is Stalled)
        if selected(obj, spec):
            found.append((spec, body))
    return found


def _lineage(args: argparse.Namespace, cluster: Cluster) -> int:
    ref = parse_workload(args.workload, args.namespace or cluster.namespace)
    obj = cluster.get_workload(ref)
    policies = _governing(cluster, obj)
    if not policies:
        print(f"note: no ImagePolicy selects {args.workload}", file=sys.stderr)
    _emit(lineage_cmd.build(ref, obj, policies), args.output, lineage_cmd.table)
    return EXIT_OK


def _plan(args: argparse.Namespace, cluster: Cluster) -> int:
    body = cluster.get_policy(args.policy)
    try:
        spec = parse_policy(args.policy, body.get("spec") or {})
    except InvalidSpec as exc:
        raise CliError(f"imagepolicy {args.policy!r} cannot be planned: {exc}", 1) from exc
    workloads = plan_cmd.governed_workloads(spec, cluster.list_workloads(spec.rollout.namespaces))
    adapter = cluster.adapter()
    try:
        result, kube = plan_cmd.run_check(
            spec,
            body,
            workloads,
            adapter,
            adapter,
            operator_namespace=cluster.operator_namespace,
            verify=args.ca_bundle or True,
            now=datetime.now(UTC),
            clock=time.monotonic(),
        )
    except ImageDriftError as exc:
        raise CliError(f"planning {args.policy!r}: {exc}") from exc
    doc = plan_cmd.build(spec, body, result, kube)
    _emit(doc, args.output, plan_cmd.table)
    if doc["lastError"]:
        print(f"error: the plan is incomplete: {doc['lastError']}", file=sys.stderr)
        return EXIT_API
    return EXIT_OK


def _pause(args: argparse.Namespace, cluster: Cluster) -> int:
    pause = args.command == "pause"
    if "/" in args.target:
        ref = parse_workload(args.target, args.namespace or cluster.namespace)
        doc = pause_cmd.workload(cluster, ref, pause)
    else:
        if args.namespace:
            raise CliError(
                "ImagePolicies are cluster-scoped: drop -n, or name a workload as KIND/NAME",
                EXIT_NOT_FOUND,
            )
        doc = pause_cmd.policy(cluster, args.target, pause)
    _emit(doc, args.output, pause_cmd.table)
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Cluster], int]] = {
    "status": _status,
    "lineage": _lineage,
    "plan": _plan,
    "pause": _pause,
    "resume": _pause,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns (and, as a script, exits with) the exit code."""
    args = _parser().parse_args(argv)
    try:
        cluster = Cluster.connect(args.kubeconfig, args.context, args.operator_namespace)
        try:
            return COMMANDS[args.command](args, cluster)
        finally:
            cluster.close()
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except ImageDriftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_API


if __name__ == "__main__":
    sys.exit(main())
