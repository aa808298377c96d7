"""The container and Kubernetes files in deploy/ checked against the server they run: no container runtime or
cluster is reachable here, so the manifests are parsed and every port, path and name is checked against the real
app's routes and `tunecraft serve`'s defaults."""

import json
import re
from pathlib import Path

import yaml

from tunecraft.serve.app import create_app
from tunecraft.serve.settings import ServeSettings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ROOT = DEPLOY.parent


def _routes(tmp_path) -> set[str]:
    model = tmp_path / "run" / "model"  # routes are built without loading weights (they load in the lifespan)
    model.mkdir(parents=True)
    (model / "tunecraft.json").write_text(json.dumps({"task": "causal_lm", "generation": {}}))
    return set(create_app(ServeSettings(run=str(model.parent))).openapi()["paths"])


def _manifests() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "tunecraft-serve.yaml").read_text(encoding="utf-8")))
    return {d["kind"]: d for d in docs}


def test_kubernetes_manifests_match_the_server(tmp_path):
    docs = _manifests()
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert all(d["apiVersion"] for d in docs.values())
    routes = _routes(tmp_path)
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = ServeSettings.model_fields["port"].default
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    args = container["args"]
    assert args[args.index("--port") + 1] == str(port) and args[args.index("--host") + 1] == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"} and "/health" in routes
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) == port
    assert notes["prometheus.io/path"] in routes
    # the selector finds the pods; the Service sends to the named port; the autoscaler scales this Deployment
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert container["resources"]["requests"]["cpu"]  # CPU utilization is measured against the request
    # a pod being stopped is given longer than the server's own drain of requests in flight
    drain = float(args[args.index("--drain-seconds") + 1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert args[0].startswith(container["volumeMounts"][0]["mountPath"] + "/")


def test_dockerfiles_run_tunecraft_serve_as_pinned():
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    port = ServeSettings.model_fields["port"].default
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / name).read_text(encoding="utf-8")
        assert f"pip install torch=={pins['torch']} " in text, name  # the tested torch, CPU or CUDA build
        assert "pip install -c constraints.txt \".[serve,compress]\"" in text, name  # the serving stack, variants too
        assert f"EXPOSE {port}" in text and "'http://127.0.0.1:8000/health'" in text
        assert 'ENTRYPOINT ["tunecraft", "serve"]' in text
        cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M)[1])
        assert cmd[cmd.index("--port") + 1] == str(port) and cmd[cmd.index("--host") + 1] == "0.0.0.0"
        assert re.search(r"^USER 10001$", text, re.M)
