"""`vkrama serve … --generate kube|quadlet|compose`: the same plan `serve` runs, written for
Kubernetes, systemd (quadlet) and compose. GPU hosts are fake /sys and /dev trees; the
Kubernetes files are checked against the Kubernetes OpenAPI schemas offline."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fakesys import FakeHost, amd_dgpu_with_kfd, intel_nvidia_laptop, no_gpu
from test_devices_cli import roots

from vkrama.errors import ExitStatus

K8S_VERSION = "1.33.0"
LVP = "/usr/share/vulkan/icd.d/lvp_icd.json"
RADV = "/usr/share/vulkan/icd.d/radeon_icd.json"

# (host, serve flags, device plugin resource, environment the container must get)
PLANS = {
    "cpu-asks-for-no-gpu": (no_gpu, ["--backend", "cpu"], None, {}),
    "lavapipe-asks-for-no-gpu-and-names-the-software-icd": (
        no_gpu, ["--vk-driver", "lavapipe"], None,
        {"VK_DRIVER_FILES": LVP, "GGML_VK_VISIBLE_DEVICES": "0"},
    ),
    "radv-asks-amds-device-plugin": (
        amd_dgpu_with_kfd, ["--vk-driver", "radv"], "amd.com/gpu",
        {"VK_DRIVER_FILES": RADV, "GGML_VK_VISIBLE_DEVICES": "0"},
    ),
    "rocm-asks-amds-device-plugin": (
        amd_dgpu_with_kfd, ["--backend", "rocm"], "amd.com/gpu", {"HIP_VISIBLE_DEVICES": "0"},
    ),
    "cuda-asks-nvidias-device-plugin": (
        intel_nvidia_laptop, ["--backend", "cuda"], "nvidia.com/gpu",
        {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"},
    ),
    "vulkan-nvidia-asks-for-graphics-too": (
        intel_nvidia_laptop, ["--vk-driver", "nvidia"], "nvidia.com/gpu",
        {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility,graphics", "GGML_VK_VISIBLE_DEVICES": "0"},
    ),
    "sycl-cpu-device-asks-for-no-gpu-and-keeps-its-shim": (
        no_gpu, ["--backend", "oneapi"], None,
        {"ONEAPI_DEVICE_SELECTOR": "opencl:cpu",
         "LD_PRELOAD": "/opt/oneapi/cpu-device/libsycl-cpu-device.so"},
    ),
    "oneapi-asks-intels-i915-plugin": (
        intel_nvidia_laptop, ["--backend", "oneapi"], "gpu.intel.com/i915",
        {"ONEAPI_DEVICE_SELECTOR": "level_zero:0"},
    ),
    "anv-asks-intels-i915-plugin": (
        intel_nvidia_laptop, ["--vk-driver", "anv"], "gpu.intel.com/i915",
        {"GGML_VK_VISIBLE_DEVICES": "0"},
    ),
}  # fmt: skip


def generate(
    vkrama: Callable[..., Any], host: FakeHost, model: Path, out: Path, kind: str, *flags: str
) -> list[dict[str, Any]] | str:
    done = vkrama("serve", str(model), "--port", "18080", *flags, "--generate", kind,
                  "-o", str(out), env=roots(host))  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = [Path(line.removeprefix("wrote ")) for line in done.stdout.splitlines()
               if line.startswith("wrote ")]  # fmt: skip
    assert len(written) == 1 and written[0].parent == out
    text = written[0].read_text()
    return list(yaml.safe_load_all(text)) if kind == "kube" else text


@pytest.mark.parametrize("case", list(PLANS))
def test_kube_manifests_are_valid_kubernetes_and_ask_the_device_plugin(
    case: str, tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    build, flags, resource, env = PLANS[case]
    host = FakeHost(tmp_path / "host")
    build(host)
    docs = generate(vkrama, host, tiny_model, tmp_path / "out", "kube", *flags)
    assert isinstance(docs, list)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployment, service = docs
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    limits = container["resources"]["limits"]
    gpus = {k: v for k, v in limits.items() if "/" in k}
    assert gpus == ({resource: 1} if resource else {})
    got = {e["name"]: e.get("value") for e in container["env"]}
    assert env.items() <= got.items()
    # No host device path ever reaches a cluster: the device plugin hands the GPU over.
    assert "/dev/" not in yaml.safe_dump(docs)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"]},
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    # The tiny model is a few MiB: the request is its size plus llama.cpp's buffers.
    assert container["resources"]["requests"]["memory"] == f"{512 + 8}Mi"


def test_kube_command_and_environment_are_the_ones_serve_runs(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path / "host")
    amd_dgpu_with_kfd(host)
    flags = ["--vk-driver", "radv", "--ctx-size", "512", "--alias", "t"]
    dry = vkrama("--dry-run", "serve", str(tiny_model), "--port", "18080", *flags,
                 env=roots(host))  # fmt: skip
    argv = shlex.split(dry.stdout)
    docs = generate(vkrama, host, tiny_model, tmp_path / "out", "kube", *flags, "--replicas", "3")
    assert isinstance(docs, list)
    deployment = docs[0]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    image_at = argv.index(container["image"])
    assert argv[image_at + 1 :] == container["command"]
    env = [f"{e['name']}={e['value']}" for e in container["env"]]
    assert env == [argv[i + 1] for i, flag in enumerate(argv) if flag == "--env"]
    assert deployment["spec"]["replicas"] == 3


def test_api_key_comes_from_a_secret_and_is_never_written(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    key = tmp_path / "key"
    key.write_text("sk-deploy-never-written\n")
    host = FakeHost(tmp_path / "host")
    out = tmp_path / "out"
    for kind in ("kube", "quadlet", "compose"):
        generate(vkrama, host, tiny_model, out, kind, "--backend", "cpu",
                 "--api-key-file", str(key))  # fmt: skip
    texts = {p.name: p.read_text() for p in out.iterdir()}
    assert len(texts) == 3
    assert not [name for name, text in texts.items() if "sk-deploy" in text]
    # llama-server reads the key from a file (--api-key-file), mounted from a secret.
    kube = list(yaml.safe_load_all(texts["vkrama-tiny-18080.yaml"]))
    for doc in kube:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pod = kube[0]["spec"]["template"]["spec"]
    assert {"name": "secret0", "secret": {"secretName": "vkrama-tiny-18080-api-key",
            "defaultMode": 0o440}} in pod["volumes"]  # fmt: skip
    assert {"name": "secret0", "mountPath": "/run/secrets/api-key", "subPath": "api-key",
            "readOnly": True} in pod["containers"][0]["volumeMounts"]  # fmt: skip
    assert pod["securityContext"]["fsGroup"] == 1000
    assert (
        "Secret=vkrama-tiny-18080-api-key,type=mount,target=/run/secrets/api-key,"
        "uid=1000,gid=1000,mode=0400" in texts["vkrama-tiny-18080.container"].splitlines()
    )
    compose = yaml.safe_load(texts["vkrama-tiny-18080.compose.yaml"])
    assert compose["secrets"] == {"api-key": {"file": str(key)}}


def test_quadlet_and_compose_pass_the_devices_groups_and_hardening_serve_uses(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path / "host")
    amd_dgpu_with_kfd(host)
    out = tmp_path / "out"
    unit = generate(vkrama, host, tiny_model, out, "quadlet", "--backend", "rocm")
    assert isinstance(unit, str)
    lines = unit.splitlines()
    for wanted in ("AddDevice=/dev/dri/renderD128", "AddDevice=/dev/kfd",
                   f"GroupAdd={host.render_gid}", "DropCapability=all", "NoNewPrivileges=true",
                   "ReadOnly=true", "User=1000", "Label=vkrama.role=serve",
                   "Label=vkrama.backend=rocm", "PublishPort=127.0.0.1:18080:8080",
                   "Environment=HIP_VISIBLE_DEVICES=0"):  # fmt: skip
        assert wanted in lines
    text = generate(vkrama, host, tiny_model, out, "compose", "--backend", "rocm")
    assert isinstance(text, str)
    service = yaml.safe_load(text)["services"]["vkrama-tiny-18080"]
    assert service["devices"] == ["/dev/dri/renderD128", "/dev/kfd"]
    assert service["group_add"] == [str(host.render_gid)]
    assert service["ports"] == ["127.0.0.1:18080:8080"]
    assert (service["read_only"], service["cap_drop"], service["user"]) == (
        True, ["ALL"], "1000:1000")  # fmt: skip
    assert service["healthcheck"]["test"][:2] == ["CMD", "bash"]


def test_dry_run_prints_the_files_and_writes_nothing(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    out, host = tmp_path / "out", FakeHost(tmp_path / "h")
    done = vkrama("--dry-run", "serve", str(tiny_model), "--backend", "cpu", "--port", "18080",
                  "--generate", "kube", "-o", str(out), env=roots(host))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# --- {out}/vkrama-tiny-18080.yaml (not written: --dry-run)")
    assert "kind: Deployment" in done.stdout
    assert not out.exists()


def test_a_gpu_no_device_plugin_serves_is_refused_and_nothing_is_written(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    host = FakeHost(tmp_path / "host")
    host.add_gpu("0000:01:00.0", "10de", "2684", "nouveau", render_minor=128)
    out = tmp_path / "out"
    done = vkrama("serve", str(tiny_model), "--vk-driver", "nvk", "--generate", "kube",
                  "-o", str(out), env=roots(host))  # fmt: skip
    assert done.returncode == ExitStatus.BACKEND_UNAVAILABLE, done.stderr
    assert done.stderr.splitlines()[-2:] == [
        "Error: no Kubernetes device plugin hands out vulkan/nvk GPUs",
        "Hint: use --generate quadlet or compose for this GPU, or --backend cpu",
    ]
    assert not out.exists()


def test_an_unavailable_backend_fails_before_anything_is_written(
    tmp_path: Path, tiny_model: Path, vkrama: Callable[..., Any]
) -> None:
    out = tmp_path / "out"
    done = vkrama("serve", str(tiny_model), "--backend", "rocm", "--generate", "compose",
                  "-o", str(out), env=roots(FakeHost(tmp_path / "h")))  # fmt: skip
    assert done.returncode == ExitStatus.BACKEND_UNAVAILABLE
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_an_oci_model_reaches_the_pod_as_an_image_volume_not_a_host_path() -> None:
    from vkrama.deploy import kube
    from vkrama.deploy.workloads import Workload
    from vkrama.engine.spec import ContainerSpec, Mount, PortMapping

    spec = ContainerSpec(
        image="localhost/vkrama/cpu:latest",
        command=("llama-server", "--model", "/models/tiny.gguf"),
        name="vkrama-tiny-8080",
        labels={"vkrama.role": "serve", "vkrama.backend": "cpu", "vkrama.device": "CPU"},
        mounts=(Mount(Path("/store/tiny.gguf"), "/models/tiny.gguf"),
                Mount(Path("/home/u/cache/mesa"), "/cache/mesa", read_only=False)),
        ports=(PortMapping(8080, 8080),),
        user="1000:1000",
        read_only_rootfs=True,
        tmpfs=("/tmp",),
    )  # fmt: skip
    work = Workload(spec, "cpu", None, None, "oci://registry.example/models/tiny:q4", "oci",
                    8 * 1024 * 1024, "127.0.0.1", 8080, replicas=2)  # fmt: skip
    generated = kube.serve(work, Path("out"))
    docs = list(yaml.safe_load_all(generated.files["vkrama-tiny-8080.yaml"]))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pod = docs[0]["spec"]["template"]["spec"]
    assert pod["volumes"][1:] == [
        {"name": "model", "image": {"reference": "registry.example/models/tiny:q4",
                                    "pullPolicy": "IfNotPresent"}},
        {"name": "cache1", "emptyDir": {}},
    ]  # fmt: skip
    assert "hostPath" not in yaml.safe_dump(docs)
    # A cluster form publishes no host port: the Service is the way in.
    assert pod["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    ]


def test_importing_garbage_is_one_error_line_and_stores_nothing(
    tmp_path: Path, vkrama: Callable[..., Any]
) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text('{"vkrama_fleet": 1, "cell": {"backend": "cpu"}}\n')
    done = vkrama("results", "import", str(bad))
    assert done.returncode == ExitStatus.USAGE
    assert done.stderr.splitlines()[0] == f"Error: {bad}:1: the record has no 'exit_code'"
    assert vkrama("results", "list", "--json").stdout.strip() == "[]"
    missing = vkrama("results", "import", str(tmp_path / "nope"))
    assert missing.returncode == ExitStatus.NOT_FOUND
    assert missing.stderr.startswith("Error: cannot read")
