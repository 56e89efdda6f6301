"""The feature server's deployment (deploy/k8s/serving/, the serve target of deploy/k8s/Dockerfile)
agrees with the server it runs: flags that `featurestore serve` has, probes on the endpoints that
exist at the port it binds, a grace period longer than its drain, and an image that installs what
it imports. No cluster or Docker here: the files are parsed and checked against the code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from feature_pipelines.cli.commands import main
from tests.helpers import PROJECT_DIR

DEPLOY = PROJECT_DIR / "deploy" / "k8s"
MANIFESTS = DEPLOY / "serving"
ROUTES = {"/health", "/ready", "/metrics", "/features", "/openapi.json", "/docs"}


@cache
def manifests() -> dict[str, dict[str, Any]]:
    """Every resource of deploy/k8s/serving/, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for file in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(file.read_text()):
            found[document["kind"]] = document
    return found


def serve_options(argv: list[str]) -> dict[str, Any]:
    """`featurestore serve ...` parsed by the command itself: an unknown or renamed flag, or a
    value of the wrong type, fails here as it would in the pod."""
    assert argv[:2] == ["featurestore", "serve"], argv
    return main.commands["serve"].make_context("serve", argv[2:]).params


def dockerfile_stage(name: str) -> str:
    """The instructions of one stage of deploy/k8s/Dockerfile (comments dropped)."""
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    stages = re.split(r"^FROM ", "\n".join(lines), flags=re.M)
    found = [s for s in stages if re.match(rf"\S+ AS {name}\s*$", s.splitlines()[0] if s else "")]
    assert len(found) == 1, f"no stage {name!r} in deploy/k8s/Dockerfile"
    return found[0]


def container() -> dict[str, Any]:
    [only] = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_the_manifests_are_the_kustomization() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS.glob("*.yaml")
                                                        if p.name != "kustomization.yaml")
    assert set(manifests()) == {"Deployment", "Service", "HorizontalPodAutoscaler", "Kustomization"}


def test_the_image_serves_with_flags_the_command_has_without_java() -> None:
    stage = dockerfile_stage("serve")
    [cmd] = re.findall(r"^CMD (.+)$", stage, flags=re.M)
    options = serve_options(json.loads(cmd))
    assert options["host"] == "0.0.0.0"
    assert re.findall(r"^EXPOSE (\d+)$", stage, flags=re.M) == [str(options["port"])]
    assert "USER 10001" in stage  # the Deployment's runAsUser
    built = stage + dockerfile_stage("serve-build")
    assert "serve-requirements.txt" in built and "--no-deps" in built
    assert not re.search(r"openjdk|java|apt-get", built)


def test_the_deployment_runs_the_command_and_probes_its_endpoints() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    box = container()
    options = serve_options(box["command"])
    [port] = [p for p in box["ports"] if p["name"] == "http"]
    assert port["containerPort"] == options["port"] and options["host"] == "0.0.0.0"
    assert box["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert box["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # /ready needs a token: the probe reads it from the Secret and asks the server's own port.
    python, flag, code = box["readinessProbe"]["exec"]["command"]
    assert (python, flag) == ("python", "-c")
    compile(code, "readinessProbe", "exec")
    assert re.search(rf'HTTPConnection\("127\.0\.0\.1", {options["port"]},', code)
    assert '"GET", "/ready"' in code and "Bearer" in code
    assert {"/health", "/ready"} <= ROUTES
    # The tokens file and the probe's token are the Secret's, mounted where the command reads them.
    mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tokens_file = PurePosixPath(options["tokens_file"])
    [probe_token] = re.findall(r'open\("([^"]+)"\)', code)
    secret = volumes["tokens"]["secret"]
    assert mounts["tokens"] == str(tokens_file.parent) == str(PurePosixPath(probe_token).parent)
    assert {i["path"] for i in secret["items"]} == {tokens_file.name, PurePosixPath(probe_token).name}
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in box["env"]} == {"REDIS_URL": "REDIS_URL"}
    # SIGTERM comes after preStop; then the server drains for up to --drain-timeout.
    pre_stop = box["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + options["drain_timeout"] + 5
    assert pod["securityContext"]["runAsUser"] == 10001 and box["securityContext"]["readOnlyRootFilesystem"]


def test_the_service_and_the_autoscaler_reach_the_deployment() -> None:
    deployment, service, hpa = (manifests()[k] for k in ("Deployment", "Service", "HorizontalPodAutoscaler"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container()["ports"]}
    assert port["port"] == serve_options(container()["command"])["port"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # The Dagster code location links its dataset assets to this Service (FEATURESTORE_SERVE_URL).
    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    [env] = values["dagster-user-deployments"]["deployments"]
    [url] = [urlsplit(e["value"]) for e in env["env"] if e["name"] == "FEATURESTORE_SERVE_URL"]
    assert (url.hostname.split(".")[0], url.port) == (service["metadata"]["name"], port["port"])


def test_the_image_installs_what_the_server_imports_within_the_package_ranges() -> None:
    """serve-requirements.txt keeps pyproject's ranges, and covers (with what its entries
    require) every package the server loads: the command, the app over the example definitions
    and uvicorn's protocols and loop."""
    lines = [line.split("#", 1)[0].strip() for line in (DEPLOY / "serve-requirements.txt").read_text().splitlines()]
    wanted = [Requirement(line) for line in lines if line]
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = {canonicalize_name(r.name): r.specifier for r in map(Requirement, project)}
    for requirement in wanted:
        assert requirement.specifier == ranges.get(canonicalize_name(requirement.name)), requirement
    code = ("import json, sys\n"
            "started = set(sys.modules)\n"  # what site.py loaded (setuptools' hook, an editable install's finder)
            "from pathlib import Path\n"
            "import uvicorn\n"
            "from feature_pipelines.cli.commands import main\n"
            "from feature_pipelines.serving.app import create_app\n"
            "from feature_pipelines.serving.config import ServeConfig\n"
            "app = create_app(ServeConfig('redis://127.0.0.1:1/0', Path('feature_defs')))\n"
            "config = uvicorn.Config(app, log_config=None)\n"
            "config.load()\n"
            "config.get_loop_factory()\n"
            "loaded = {m.split('.')[0] for m in set(sys.modules) - started}\n"
            "print(json.dumps(sorted(loaded - set(sys.stdlib_module_names))))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    by_module = metadata.packages_distributions()
    loaded = {canonicalize_name(d) for module in json.loads(run.stdout) for d in by_module.get(module, ())}
    assert "starlette" in loaded and "pyspark" in loaded  # the example merchants.py imports pyspark
    assert loaded - {"feature-pipelines"} <= installed_with(wanted)


def installed_with(requirements: list[Requirement]) -> set[str]:
    """The distributions `requirements` bring, extras and their requirements included."""
    extras_of: dict[str, set[str]] = {}
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in extras_of and requirement.extras <= extras_of[name]:
            continue
        extras = extras_of.setdefault(name, set())
        extras |= requirement.extras
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not for this platform; what the server loads here is installed
        for dependency in map(Requirement, requires):
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": e}) for e in extras | {""}):
                todo.append(dependency)
    return set(extras_of)
