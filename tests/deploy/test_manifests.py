"""deploy/ checked statically (no cluster, no Docker): every manifest parses, required fields are
there, and images, ports, addresses and secrets agree with each other, with the service's defaults
(``ServerConfig``) and with the commands the README gives."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from service.config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"crucible:{VERSION}"  # CPU torch: head, MLflow, Jobs
GPU_IMAGE = f"crucible:{VERSION}-cu126"  # CUDA torch: GPU workers
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$", re.I)


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomized() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in load_all(K8S / name)]


def obj(kind: str, name: str) -> dict:
    found = [d for d in kustomized() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def pod_specs() -> list[tuple[str, dict]]:
    """Every pod template in the manifests, by owner."""
    out = []
    for d in kustomized():
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]))
        elif d["kind"] == "RayCluster":
            out.append(("RayCluster/head", spec["headGroupSpec"]["template"]["spec"]))
            out += [(f"RayCluster/{g['groupName']}", g["template"]["spec"]) for g in spec["workerGroupSpecs"]]
    return out


def server_config() -> ServerConfig:
    data = yaml.safe_load(obj("ConfigMap", "crucible-server")["data"]["server.yaml"])
    return ServerConfig.from_dict(data)  # validates, as `crucible serve` would


def head_container() -> dict:
    head = obj("RayCluster", "crucible")["spec"]["headGroupSpec"]["template"]["spec"]
    return next(c for c in head["containers"] if c["name"] == "ray-head")


def port_named(container: dict, name: str) -> int:
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name)


def arg_value(args: list[str], flag: str) -> str:
    for arg in args:
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def readme_tags() -> set[str]:
    text = (ROOT / "README.md").read_text()
    return set(re.findall(r"docker build -f deploy/Dockerfile .*?-t (\S+)", text))


# ----------------------------------------------------------------------------- parsing
def test_every_yaml_file_parses():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 9
    for path in files:
        assert load_all(path), f"{path} is empty"


def test_kustomization_lists_every_manifest_but_the_example_secrets():
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secrets.example.yaml"}
    for d in kustomized():
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], d
        assert d["kind"] != "Secret", "secrets are created by hand, never applied from the repository"


def test_workloads_select_their_own_pods():
    for d in kustomized():
        if d["kind"] in ("Deployment", "StatefulSet"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
    templates = [d["spec"]["template"]["metadata"]["labels"] for d in kustomized() if d["kind"] == "Deployment"]
    templates += [d["spec"]["template"]["metadata"]["labels"] for d in kustomized() if d["kind"] == "StatefulSet"]
    for svc in (d for d in kustomized() if d["kind"] == "Service" and d["metadata"]["name"] != "crucible"):
        assert any(svc["spec"]["selector"].items() <= t.items() for t in templates), svc["metadata"]["name"]


# ----------------------------------------------------------------------------- RayCluster
def test_raycluster_has_a_cpu_head_and_an_autoscaling_gpu_group():
    import ray

    rc = obj("RayCluster", "crucible")
    spec = rc["spec"]
    assert rc["apiVersion"] == "ray.io/v1"
    assert spec["rayVersion"] == ray.__version__, "the RayCluster's Ray must be the image's Ray"
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head runs the service, not trials"
    assert "nvidia.com/gpu" not in str(head["template"]["spec"]["containers"])
    assert head_container()["image"] == IMAGE
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and gpu["maxReplicas"] > gpu["minReplicas"]
    (worker,) = gpu["template"]["spec"]["containers"]
    assert worker["image"] == GPU_IMAGE
    for side in ("requests", "limits"):
        assert int(worker["resources"][side]["nvidia.com/gpu"]) >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["template"]["spec"]["tolerations"])


def test_the_service_runs_on_the_head_and_a_kubernetes_service_exposes_its_port():
    rc = obj("RayCluster", "crucible")
    assert rc["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    head = head_container()
    assert "deploy/head-start.sh" in " ".join(head["args"]) and (DEPLOY / "head-start.sh").is_file()
    env = {e["name"]: e for e in head["env"]}
    config_mount = next(m for m in head["volumeMounts"] if m["name"] == "config")
    assert env["CRUCIBLE_CONFIG"]["value"] == f"{config_mount['mountPath']}/server.yaml"

    config = server_config()
    assert config.port == ServerConfig().port == 8080
    assert config.host == "0.0.0.0"
    assert port_named(head, "crucible") == config.port
    metrics = int(rc["spec"]["headGroupSpec"]["rayStartParams"]["metrics-export-port"])
    assert metrics == port_named(head, "metrics") and metrics != config.port, "KubeRay's metrics port 8080 clashes"

    svc = obj("Service", "crucible")
    assert svc["spec"]["selector"] == {"ray.io/cluster": rc["metadata"]["name"], "ray.io/node-type": "head"}
    (port,) = svc["spec"]["ports"]
    assert port["port"] == config.port
    assert port["targetPort"] in ("crucible", config.port)


def test_server_config_points_at_the_cluster_services():
    config = server_config()
    mlflow_svc = obj("Service", "mlflow")
    (mlflow_port,) = mlflow_svc["spec"]["ports"]
    assert config.tracking_uri == f"http://{mlflow_svc['metadata']['name']}:{mlflow_port['port']}"
    store = urlsplit(config.store_url)
    pg_svc = obj("Service", "postgres")
    assert (store.hostname, store.port) == (pg_svc["metadata"]["name"], pg_svc["spec"]["ports"][0]["port"])
    assert store.password is None, "the job store's password comes from PGPASSWORD"
    host, _, gcs_port = config.ray_address.rpartition(":")
    assert host == "127.0.0.1" and int(gcs_port) == port_named(head_container(), "gcs-server") == 6379


# ----------------------------------------------------------------------------- MLflow, PostgreSQL
def test_mlflow_server_uses_postgres_an_artifact_store_and_basic_auth():
    deployment = obj("Deployment", "mlflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE, "the server's MLflow is the service's"
    args = container["args"]
    assert container["command"] == ["mlflow", "server"]
    assert "--app-name=basic-auth" in args
    backend = urlsplit(arg_value(args, "--backend-store-uri"))
    pg_svc = obj("Service", "postgres")
    assert backend.scheme == "postgresql" and backend.hostname == pg_svc["metadata"]["name"]
    assert backend.password is None
    artifacts = arg_value(args, "--artifacts-destination")
    assert any(m["mountPath"] == artifacts for m in container["volumeMounts"])
    svc = obj("Service", "mlflow")
    assert int(arg_value(args, "--port")) == port_named(container, "http") == svc["spec"]["ports"][0]["targetPort"]
    env = {e["name"]: e for e in container["env"]}
    assert {"MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH"} <= set(env)
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "mlflow:*" in allowed, "the Host header the service sends"


def test_basic_auth_config_is_one_file_in_both_deployments():
    in_k8s = configparser.ConfigParser()
    in_k8s.read_string(obj("ConfigMap", "mlflow-auth-config")["data"]["basic_auth.ini"])
    on_vm = configparser.ConfigParser()
    on_vm.read(DEPLOY / "mlflow" / "basic_auth.ini")
    assert dict(in_k8s["mlflow"]) == dict(on_vm["mlflow"])
    assert "admin_password" not in in_k8s["mlflow"], "the admin password comes from a Secret"
    auth_db = urlsplit(in_k8s["mlflow"]["database_uri"])
    assert auth_db.hostname == "postgres" and auth_db.password is None


def test_postgres_creates_every_database_the_urls_name():
    script = obj("ConfigMap", "postgres-init")["data"]["10-crucible.sh"]
    assert script == (DEPLOY / "mlflow" / "initdb" / "10-crucible.sh").read_text()
    auth = configparser.ConfigParser()
    auth.read_string(obj("ConfigMap", "mlflow-auth-config")["data"]["basic_auth.ini"])
    (mlflow_container,) = obj("Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    urls = [server_config().store_url, arg_value(mlflow_container["args"], "--backend-store-uri")]
    urls.append(auth["mlflow"]["database_uri"])
    for url in urls:
        parts = urlsplit(url)
        database, role = parts.path.lstrip("/"), parts.username
        assert f"CREATE DATABASE {database} OWNER {role};" in script, url
        assert f"CREATE ROLE {role} LOGIN" in script


def test_credentials_reach_processes_only_from_secrets():
    secrets = {(d["metadata"]["name"], k) for d in load_all(K8S / "secrets.example.yaml") for k in d["stringData"]}
    for owner, spec in pod_specs():
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            for env in container.get("env", []):
                if SECRETISH.search(env["name"]) and env["name"] != "CRUCIBLE_TOKEN_FILE":
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    assert ref and "value" not in env, f"{owner}: {env['name']} must come from a Secret"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in secrets, f"{owner}: no Secret {ref}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert any(name == volume["secret"]["secretName"] for name, _ in secrets)
    head_env = {e["name"] for e in head_container()["env"]}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD"} <= head_env
    for d in kustomized():
        if d["kind"] == "ConfigMap":
            text = yaml.safe_dump(d["data"]).lower()
            assert "password =" not in text and "password:" not in text, d["metadata"]["name"]


# ----------------------------------------------------------------------------- ray up, compose
def test_ray_up_config_validates_and_agrees_with_the_service():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((DEPLOY / "ray-up" / "cluster.yaml").read_text())
    validate_config(prepare_config(yaml.safe_load((DEPLOY / "ray-up" / "cluster.yaml").read_text())))
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    gpu_types = [t for name, t in types.items() if name != cfg["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] > t["min_workers"] for t in gpu_types)
    assert cfg["docker"]["head_image"] == IMAGE and cfg["docker"]["worker_image"] == GPU_IMAGE
    server_yaml = DEPLOY / "ray-up" / "server.yaml"
    config = ServerConfig.from_yaml(server_yaml)
    assert config.port == ServerConfig().port
    mounted = {remote: local for remote, local in cfg["file_mounts"].items()}
    assert mounted["~/crucible/conf"] == "deploy/ray-up"
    start = " ".join(cfg["head_start_ray_commands"])
    assert "deploy/head-start.sh" in start and "CRUCIBLE_CONFIG=~/crucible/conf/server.yaml" in start
    gcs_port = re.search(r"--port=(\d+)", start).group(1)
    assert config.ray_address == f"127.0.0.1:{gcs_port}"
    assert f":{gcs_port}" in " ".join(cfg["worker_start_ray_commands"])


def test_compose_runs_mlflow_on_postgres_with_auth():
    compose = yaml.safe_load((DEPLOY / "mlflow" / "compose.yaml").read_text())
    services = compose["services"]
    mlflow = services["mlflow"]
    assert mlflow["image"] == IMAGE and services["mlflow-user"]["image"] == IMAGE
    assert "--app-name=basic-auth" in mlflow["command"]
    backend = urlsplit(arg_value(mlflow["command"], "--backend-store-uri"))
    assert backend.hostname == "postgres" and "postgres" in services and backend.password is None
    assert f"{arg_value(mlflow['command'], '--port')}:5000" in mlflow["ports"]
    for service in services.values():
        for name, value in service.get("environment", {}).items():
            if SECRETISH.search(name):
                assert str(value).startswith("${"), f"{name} must come from .env, not the file"
    ray_up = ServerConfig.from_yaml(DEPLOY / "ray-up" / "server.yaml")
    assert urlsplit(ray_up.tracking_uri).port == 5000 and urlsplit(ray_up.store_url).port == 5432


# ----------------------------------------------------------------------------- image, scripts
def test_dockerfile_builds_the_images_the_manifests_name():
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    base = next(line for line in instructions if line.startswith("FROM"))
    assert re.fullmatch(r"FROM python:\$\{PYTHON_VERSION\}-slim(-\w+)?", base)
    assert "ARG PYTHON_VERSION=3.11" in instructions
    assert any(line.startswith("ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu") for line in instructions)
    assert '"torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"' in text
    assert re.search(r"pip install \. ", text), "installs the project"
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    exposed = {int(p) for line in instructions if line.startswith("EXPOSE") for p in line.split()[1:]}
    assert ServerConfig().port in exposed
    assert readme_tags() == {IMAGE, GPU_IMAGE}, "the README builds the images the manifests use"
    readme = (ROOT / "README.md").read_text()
    assert f"-t {GPU_IMAGE} --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126" in readme


@pytest.mark.parametrize("script", sorted(p.name for p in DEPLOY.glob("*.sh")) + ["mlflow/initdb/10-crucible.sh"])
def test_scripts_pass_bash_n_and_stop_on_errors(script):
    path = DEPLOY / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "set -euo pipefail" in path.read_text()


def test_local_cluster_script_without_a_cluster(tmp_path):
    def script(*args: str, **env: str) -> subprocess.CompletedProcess:
        env = {"CRUCIBLE_CLUSTER_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", **env}
        cmd = ["bash", str(DEPLOY / "local-cluster.sh"), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True)

    usage = script()
    assert usage.returncode == 2 and "up|down|status|kill-node2" in usage.stderr
    status = script("status")
    assert status.returncode == 3 and status.stdout.count("stopped") == 4
    down = script("down")
    assert down.returncode == 0, down.stderr
    bad = script("up", CRUCIBLE_NODES="3")
    assert bad.returncode == 1 and "CRUCIBLE_NODES must be 1 or 2" in bad.stderr


def test_create_user_takes_credentials_from_the_environment_only():
    script = DEPLOY / "mlflow" / "create_user.py"
    out = subprocess.run([sys.executable, str(script)], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 2
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "CRUCIBLE_MLFLOW_PASSWORD"):
        assert name in out.stderr


def test_head_start_reads_the_generated_ray_start_command():
    text = (DEPLOY / "head-start.sh").read_text()
    assert "KUBERAY_GEN_RAY_START_CMD" in text and 'eval "exec $START"' in text
    worker_args = obj("RayCluster", "crucible")["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "$KUBERAY_GEN_RAY_START_CMD" in shlex.join(worker_args["args"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl: the real kustomize render is skipped")
def test_kubectl_kustomize_renders_the_same_objects():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    ours = sorted((d["kind"], d["metadata"]["name"]) for d in kustomized())
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == ours
    assert all(d["metadata"].get("namespace") == "crucible" for d in rendered if d["kind"] != "Namespace")
