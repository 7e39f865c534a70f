#!/usr/bin/env python3
"""Offline checks of deploy/: what can be verified without a container
engine or a cluster.

  deploy_test.py image FFID FFID_WORKER FFICTL
      The runtime image's steps in this shell: every shared library the
      built binaries link directly belongs to a package of deploy/runtime-packages.txt
      (or to the base image; apt brings their dependencies); the Dockerfile's ENTRYPOINT, run as the image's
      uid 65532 with its socket directory private to that user, starts the
      daemon; its HEALTHCHECK command says SERVING; SIGTERM stops it with
      status 0. compose.yaml uses the same image, user and health check.
  deploy_test.py k8s VENV FFID FFICTL
      deploy/k8s/*.yaml against the Kubernetes 1.30 schema with
      kubernetes-validate (strict: unknown fields fail), plus a broken
      manifest that must fail; skipped (77) without the venv that
      deploy/test.sh makes. Then the ConfigMap's ffid.conf runs: the real
      daemon started with it (its /etc/ffid paths pointed at a certificate
      and token file made here, its addresses at free local ports) listens
      with TLS, and its plain-text health port (the probes') says SERVING.
  deploy_test.py systemd FFID
      systemd-analyze verify of deploy/systemd/ffid.service (with ExecStart
      pointed at the built ffid); any warning fails.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
# In debian:12-slim already; sanitizer runtimes only in asan builds.
BASE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}
SANITIZER_LIBS = re.compile(r"lib(asan|ubsan|tsan|lsan)\.so")
IMAGE_UID = 65532


def fail(message):
    print("FAIL: " + message)
    sys.exit(1)


def runtime_packages():
    with open(os.path.join(DEPLOY, "runtime-packages.txt")) as f:
        return {line.strip() for line in f
                if line.strip() and not line.startswith("#")}


def dockerfile_instruction(text, name):
    """The (continued) argument text of the last `name` instruction."""
    joined = re.sub(r"\\\n", " ", text)
    found = [line[len(name):].strip() for line in joined.splitlines()
             if line.startswith(name + " ")]
    return found[-1] if found else None


def needed(binary):
    """The sonames `binary` links directly (DT_NEEDED); apt brings the
    rest as dependencies of their packages."""
    out = subprocess.run(["readelf", "-d", binary], capture_output=True,
                         text=True, check=True).stdout
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def check_libraries(binaries, packages):
    checked = 0
    for binary in binaries:
        direct = needed(binary)
        out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            m = re.search(r"^\s*(\S+) => (/\S+)", line)
            if (not m or m.group(1) not in direct or
                    SANITIZER_LIBS.search(m.group(2))):
                continue
            path = os.path.realpath(m.group(2))
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True,
                                   text=True)
            if owner.returncode != 0:
                # usrmerge: dpkg knows /lib/..., ldd says /usr/lib/...
                alt = re.sub(r"^/usr/lib/", "/lib/", path)
                owner = subprocess.run(["dpkg", "-S", alt],
                                       capture_output=True, text=True)
            if owner.returncode != 0:
                fail(f"{binary} loads {path}, which no Debian package owns")
            package = owner.stdout.split(":")[0].strip()
            if package not in packages and package not in BASE_PACKAGES:
                fail(f"{os.path.basename(binary)} loads {path} from package "
                     f"{package}, missing in deploy/runtime-packages.txt")
            checked += 1
    if checked == 0:
        fail("found no shared library to check")
    print(f"ok: the {checked} libraries {len(binaries)} binaries link "
          f"directly come from deploy/runtime-packages.txt or the base image")


def as_image_user():
    def demote():
        os.setgroups([])
        os.setgid(IMAGE_UID)
        os.setuid(IMAGE_UID)
    return demote


def image(ffid, worker, ffictl):
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        dockerfile = f.read()
    if not re.search(r"^FROM debian:12 AS build$", dockerfile, re.M):
        fail("the Dockerfile's build stage is not debian:12")
    if not re.search(r"^RUN .*bash deploy/install-deps.sh", dockerfile, re.M):
        fail("the Dockerfile does not build with deploy/install-deps.sh")
    user = dockerfile_instruction(dockerfile, "USER")
    if user is None or user.split(":")[0] in ("0", "root"):
        fail(f"the image runs as root (USER {user})")
    entrypoint = json.loads(dockerfile_instruction(dockerfile, "ENTRYPOINT"))
    health = dockerfile_instruction(dockerfile, "HEALTHCHECK")
    health_cmd = json.loads(health[health.index("CMD") + 3:].strip())
    if health_cmd[-1] != "health":
        fail(f"the HEALTHCHECK is not `ffictl health`: {health_cmd}")

    check_libraries([ffid, worker, ffictl], runtime_packages())

    if os.geteuid() != 0:
        print("ok (the run as uid 65532 needs root to switch users: skipped)")
        return
    # The image's run: same arguments, our binaries, a private socket dir.
    tmp = tempfile.mkdtemp(prefix="ffid-image-")
    os.chmod(tmp, 0o755)
    run_dir = os.path.join(tmp, "run", "ffid")
    os.makedirs(run_dir)
    os.chown(run_dir, IMAGE_UID, IMAGE_UID)
    os.chmod(run_dir, 0o700)
    args = []
    for word in entrypoint:
        word = word.replace("/usr/local/bin/ffid", ffid)
        word = word.replace("/run/ffid", run_dir)
        word = word.replace("0.0.0.0:9464", "127.0.0.1:0")
        args.append(word)
    args += ["--worker-path", worker]
    env = {"PATH": "/usr/bin:/bin", "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=0")}
    log_path = os.path.join(tmp, "ffid.log")
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(args, stdout=log, stderr=log, env=env,
                                  preexec_fn=as_image_user(), cwd="/")
    try:
        socket = os.path.join(run_dir, "ffid.sock")
        for _ in range(600):
            if os.path.exists(socket) or daemon.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists(socket):
            fail("the image's ENTRYPOINT did not start:\n" +
                 open(log_path).read())
        if os.stat(socket).st_uid != IMAGE_UID:
            fail("the socket does not belong to the image user")
        health_env = dict(env, FFID_ADDRESS="unix:" + socket)
        check = subprocess.run([ffictl] + health_cmd[1:], env=health_env,
                               capture_output=True, text=True,
                               preexec_fn=as_image_user(), timeout=60)
        if check.returncode != 0 or check.stdout.strip() != "SERVING":
            fail(f"HEALTHCHECK said {check.stdout!r} {check.stderr!r} "
                 f"(exit {check.returncode})")
        print("ok: ENTRYPOINT runs as uid 65532 and HEALTHCHECK says SERVING")
        for line in open(log_path):
            if line.startswith("{"):
                json.loads(line)  # --log-format json: every line an object
    finally:
        daemon.terminate()
        try:
            status = daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            fail("the daemon did not stop on SIGTERM")
    if status != 0:
        fail(f"the daemon exited with {status} after SIGTERM:\n" +
             open(log_path).read())
    shutil.rmtree(tmp, ignore_errors=True)
    print("ok: SIGTERM stopped it with status 0")

    with open(os.path.join(DEPLOY, "compose.yaml")) as f:
        compose = f.read()
    for needle in ("dockerfile: deploy/Dockerfile", 'user: "65532:65532"',
                   "read_only: true", "/usr/local/bin/ffictl\", \"health",
                   "condition: service_healthy", "example-client:"):
        if needle not in compose:
            fail(f"compose.yaml lacks {needle!r}")
    print("ok: compose.yaml runs the image read-only as 65532 with its "
          "health check and an example client")
    check_dockerignore()


def dockerignore_regex(pattern):
    """A .dockerignore line as a regular expression over a context path
    ('**' any number of directories, '*' and '?' within one)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def check_dockerignore():
    """The build context leaves out build trees, dependency caches, venvs
    and .git, and keeps every file git tracks (the sources the image
    builds from)."""
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        patterns = [dockerignore_regex(line.strip()) for line in f
                    if line.strip() and not line.startswith("#")]

    def ignored(path):
        parts = path.split("/")
        return any(p.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)
                   for p in patterns)

    for path in (".git/HEAD", "build/default/bin/ffid",
                 "build/release/CMakeCache.txt",
                 "clients/node/node_modules/@grpc/grpc-js/package.json",
                 "deploy/tools/node_modules/.bin/buf",
                 "build/default/python-venv/bin/python",
                 "clients/python/.venv/bin/python",
                 "clients/python/src/ffid/__pycache__/x.pyc",
                 "clients/go/.gocache/x"):
        if not ignored(path):
            fail(f".dockerignore lets {path} into the build context")
    tracked = subprocess.run(["git", "-C", ROOT, "ls-files"], capture_output=True,
                             text=True)
    files = tracked.stdout.split() if tracked.returncode == 0 else []
    kept = [f for f in files if not ignored(f)]
    if files and len(kept) != len(files):
        fail(".dockerignore leaves out tracked files: " +
             ", ".join(sorted(set(files) - set(kept))[:10]))
    print(f"ok: .dockerignore leaves out build trees, node_modules, venvs and "
          f".git, and keeps all {len(files)} tracked files")


def configmap_file(text, key):
    """The block-scalar value of `key` in a ConfigMap's data (no YAML
    library outside the venv: the manifest's own two-space layout)."""
    lines = text.splitlines()
    start = lines.index(f"  {key}: |") + 1
    body = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        body.append(line[4:])
    return "\n".join(body) + "\n"


def run_k8s_config(k8s_dir, ffid, ffictl):
    conf = configmap_file(open(os.path.join(k8s_dir, "configmap.yaml")).read(),
                          "ffid.conf")
    deployment = open(os.path.join(k8s_dir, "deployment.yaml")).read()
    for mount in ("/etc/ffid/config", "/etc/ffid/tls", "/etc/ffid/tokens"):
        if f"mountPath: {mount}" not in deployment:
            fail(f"deployment.yaml does not mount {mount}")
    tmp = tempfile.mkdtemp(prefix="ffid-k8s-")
    try:
        os.makedirs(os.path.join(tmp, "tls"))
        os.makedirs(os.path.join(tmp, "tokens"))
        made = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-days", "1", "-subj", "/CN=ffid", "-addext",
             "subjectAltName=IP:127.0.0.1",
             "-keyout", os.path.join(tmp, "tls", "tls.key"),
             "-out", os.path.join(tmp, "tls", "tls.crt")],
            capture_output=True, text=True)
        if made.returncode != 0:
            fail("openssl: " + made.stderr)
        with open(os.path.join(tmp, "tokens", "tokens"), "w") as f:
            f.write("%s k8s-test\n" % ("0" * 64))
        conf = conf.replace("/etc/ffid/", tmp + "/")
        for port in ("50051", "8081", "9464"):
            conf = conf.replace(f'"0.0.0.0:{port}"', '"127.0.0.1:0"')
        path = os.path.join(tmp, "ffid.conf")
        with open(path, "w") as f:
            f.write(conf)
        log_path = os.path.join(tmp, "log")
        with open(log_path, "w") as log:
            daemon = subprocess.Popen([ffid, "--config=" + path], stderr=log)
        try:
            health = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and health is None:
                text = open(log_path).read()
                m = re.search(r'health checking \(only\) on (127\.0\.0\.1:\d+)', text)
                if m and '"msg":"listening on' in text:
                    health = m.group(1)
                elif daemon.poll() is not None:
                    fail("the daemon refused the ConfigMap's ffid.conf:\n" + text)
                else:
                    time.sleep(0.05)
            if health is None:
                fail("the daemon did not start with the ConfigMap's ffid.conf:\n"
                     + open(log_path).read())
            text = open(log_path).read()
            if "with TLS" not in text or "--insecure" in text:
                fail("the ConfigMap's TCP listener is not TLS:\n" + text)
            # The health port is plain text: a TCP address means TLS to a
            # client unless it says --insecure.
            probe = subprocess.run([ffictl, "--address", health, "--insecure",
                                    "health"],
                                   capture_output=True, text=True, timeout=60)
            if probe.returncode != 0 or probe.stdout.strip() != "SERVING":
                fail(f"the probes' health port {health}: {probe.stdout}{probe.stderr}")
        finally:
            daemon.terminate()
            daemon.wait(60)
        print("ok: the ConfigMap's ffid.conf runs: TLS on the API port, "
              "SERVING on the plain-text health port")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def k8s(venv, ffid, ffictl):
    tool = os.path.join(venv, "bin", "kubernetes-validate")
    if not os.access(tool, os.X_OK):
        print(f"SKIP: {tool} missing (deploy/test.sh creates it)")
        sys.exit(77)
    k8s_dir = os.path.join(DEPLOY, "k8s")
    manifests = sorted(os.path.join(k8s_dir, name)
                       for name in os.listdir(k8s_dir)
                       if name.endswith(".yaml") and name != "kustomization.yaml")
    result = subprocess.run([tool, "--strict", "-k", "1.30.0"] + manifests,
                            capture_output=True, text=True)
    print(result.stdout + result.stderr)
    if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
        fail("the manifests do not validate")
    kinds = set(re.findall(r"resource (\w+)/", result.stdout))
    for kind in ("deployment", "service", "configmap", "networkpolicy"):
        if kind not in kinds:
            fail(f"no {kind} validated")
    # The validator must actually bite: an unknown field fails.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as bad:
        with open(os.path.join(k8s_dir, "deployment.yaml")) as f:
            bad.write(f.read().replace("readOnlyRootFilesystem",
                                       "readOnlyRootFileSystem"))
        bad.flush()
        broken = subprocess.run([tool, "--strict", "-k", "1.30.0", bad.name],
                                capture_output=True, text=True)
        if broken.returncode == 0:
            fail("kubernetes-validate accepted a misspelt field")
    deployment = open(os.path.join(k8s_dir, "deployment.yaml")).read()
    for needle in ("runAsNonRoot: true", "type: RuntimeDefault",
                   'drop: ["ALL"]', "readOnlyRootFilesystem: true",
                   "grpc: {port: 8081}", "limits:", "requests:",
                   '"--config=/etc/ffid/config/ffid.conf"',
                   "secretName: ffid-tls", "secretName: ffid-tokens"):
        if needle not in deployment:
            fail(f"deployment.yaml lacks {needle!r}")
    if "--insecure" in deployment:
        fail("deployment.yaml runs the daemon with --insecure")
    print(f"ok: {len(manifests)} manifests valid against Kubernetes 1.30")
    run_k8s_config(k8s_dir, ffid, ffictl)


def systemd(ffid):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        fail("systemd-analyze is missing (deploy/install-deps.sh installs "
             "systemd)")
    unit = open(os.path.join(DEPLOY, "systemd", "ffid.service")).read()
    if "ExecStart=/usr/local/bin/ffid " not in unit:
        fail("unexpected ExecStart")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ffid.service")
        with open(path, "w") as f:
            f.write(unit.replace("ExecStart=/usr/local/bin/ffid ",
                                 "ExecStart=" + ffid + " "))
        result = subprocess.run([analyze, "verify", path],
                                capture_output=True, text=True)
        output = (result.stdout + result.stderr).strip()
        # Messages about other units on this machine are not ours.
        ours = [line for line in output.splitlines() if "ffid" in line]
        if result.returncode != 0 or ours:
            fail(f"systemd-analyze verify: exit {result.returncode}\n{output}")
    print("ok: systemd-analyze verify deploy/systemd/ffid.service")


def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    command, args = sys.argv[1], sys.argv[2:]
    {"image": image, "k8s": k8s, "systemd": systemd}[command](*args)


if __name__ == "__main__":
    main()
