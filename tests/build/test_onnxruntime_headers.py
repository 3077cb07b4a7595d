"""runtime/cmake/onnxruntime_headers.cmake on machines unlike this one, run alone in CMake's script mode:
no apt, an Ubuntu-like apt whose sources name a suite without the package, no network with the headers
given, a mirror serving a wrong file, and a mirror serving the pinned file. The mirror is a local HTTP
server on the loopback interface; the pinned version and hash are replaced by those of a .deb the test
builds, so nothing leaves this machine."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "runtime" / "cmake" / "onnxruntime_headers.cmake"
POOL = "pool/main/o/onnxruntime"
VERSION = "9.9.9+test-1"
DEB_NAME = f"libonnxruntime-dev_{VERSION}_amd64.deb"
FIX = "Fix: set ONNXRUNTIME_INCLUDE_DIR to a directory holding onnxruntime_c_api.h"


def _cmake() -> str:
    beside_python = pathlib.Path(sys.prefix) / "bin" / "cmake"
    found = str(beside_python) if beside_python.is_file() else shutil.which("cmake")
    if not found:
        pytest.skip("cmake not found (on PATH or in this Python's environment)")
    return found


def _header(api: int) -> str:
    return f"#pragma once\n#define ORT_API_VERSION {api}\n"


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def _tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_deb(api: int = 21) -> bytes:
    """A .deb laid out as Debian's libonnxruntime-dev: ar(debian-binary, control.tar.xz, data.tar.xz)."""
    data = _tar_xz({
        "./usr/include/onnxruntime/onnxruntime_c_api.h": _header(api).encode(),
        "./usr/share/doc/libonnxruntime-dev/copyright": b"test\n",
    })
    control = _tar_xz({"./control": b"Package: libonnxruntime-dev\n"})
    return (b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n") + _ar_member("control.tar.xz", control)
            + _ar_member("data.tar.xz", data))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """(base URL, folder it serves): an HTTP server on 127.0.0.1 for the test's duration."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/debian"


def run_script(tmp_path, *, path: str | None = None, env_extra: dict | None = None, **defines):
    """Runs the script; returns (exit code, stdout + stderr). `path` replaces PATH (default: an empty folder,
    so no apt-get); every run gets its own empty apt configuration unless NCNN_ORT_APT_ETC is given."""
    if path is None:
        empty = tmp_path / "empty-bin"
        empty.mkdir(exist_ok=True)
        path = str(empty)
    apt_etc = tmp_path / "apt-etc"
    (apt_etc / "sources.list.d").mkdir(parents=True, exist_ok=True)
    settings = {"NCNN_ORT_WORK_DIR": str(tmp_path / "work"), "NCNN_ORT_SYSTEM_PREFIXES": "",
                "NCNN_ORT_APT_ETC": str(apt_etc)}
    settings.update(defines)
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONNXRUNTIME_INCLUDE_DIR", "CONDA_PREFIX") and not k.startswith("NCNN_ORT_")
           and not k.lower().endswith("_proxy")}
    env["PATH"] = path
    env.update(env_extra or {})
    args = [_cmake()] + [f"-D{k}={v}" for k, v in settings.items()] + ["-P", str(SCRIPT)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def tried(output: str) -> dict[int, str]:
    """{step number: its line} of the error's list of sources."""
    steps = {}
    for line in output.splitlines():
        line = line.strip()
        if line[:2] in ("1.", "2.", "3.", "4."):
            steps[int(line[0])] = line
    return steps


def assert_error(code: int, output: str) -> dict[int, str]:
    assert code != 0, output
    assert "onnxruntime's C API headers (onnxruntime_c_api.h) were not found. Tried:" in output
    assert FIX in output and "(C API >= 18: onnxruntime >= 1.18)" in output
    steps = tried(output)
    assert sorted(steps) == [1, 2, 3, 4], output
    assert "ONNXRUNTIME_INCLUDE_DIR: not set" in steps[1]
    return steps


def test_headers_given_build_offline(tmp_path):
    include = tmp_path / "include"
    include.mkdir()
    (include / "onnxruntime_c_api.h").write_text(_header(23))
    code, output = run_script(tmp_path, ONNXRUNTIME_INCLUDE_DIR=include, NCNN_ORT_DEB_MIRROR=closed_port_url())
    assert code == 0, output
    assert f"onnxruntime headers: {include} (ONNXRUNTIME_INCLUDE_DIR, C API 23)" in output
    assert "Fetching" not in output
    # The environment variable does the same (what `ONNXRUNTIME_INCLUDE_DIR=... pip install .` relies on).
    code, output = run_script(tmp_path, env_extra={"ONNXRUNTIME_INCLUDE_DIR": str(include)},
                              NCNN_ORT_DEB_MIRROR=closed_port_url())
    assert code == 0 and "(ONNXRUNTIME_INCLUDE_DIR, C API 23)" in output, output


def test_headers_given_but_wrong_is_an_error_not_a_download(tmp_path, mirror):
    base, folder = mirror
    (folder / POOL).mkdir(parents=True)
    (folder / POOL / DEB_NAME).write_bytes(make_deb())
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, output = run_script(tmp_path, ONNXRUNTIME_INCLUDE_DIR=empty, NCNN_ORT_DEB_MIRROR=base,
                              NCNN_ORT_DEB_VERSION=VERSION)
    assert code != 0 and f"ONNXRUNTIME_INCLUDE_DIR={empty} holds no onnxruntime_c_api.h" in output, output
    assert FIX in output and "Fetching" not in output
    (empty / "onnxruntime_c_api.h").write_text(_header(17))
    code, output = run_script(tmp_path, ONNXRUNTIME_INCLUDE_DIR=empty)
    assert code != 0 and "has C API 17, older than the 18 the library needs" in output, output


def test_installed_headers_in_a_prefix(tmp_path):
    old, new = tmp_path / "old", tmp_path / "conda"
    (old / "include" / "onnxruntime").mkdir(parents=True)
    (old / "include" / "onnxruntime" / "onnxruntime_c_api.h").write_text(_header(16))
    session = new / "include" / "onnxruntime" / "core" / "session"  # the older install layout
    session.mkdir(parents=True)
    (session / "onnxruntime_c_api.h").write_text(_header(20))
    code, output = run_script(tmp_path, NCNN_ORT_SYSTEM_PREFIXES=f"{old};{new}", NCNN_ORT_DEB_MIRROR=closed_port_url())
    assert code == 0, output
    assert f"onnxruntime headers: {session} (installed, C API 20)" in output
    # A too-old install alone is reported, not used.
    code, output = run_script(tmp_path, NCNN_ORT_SYSTEM_PREFIXES=str(old))
    steps = assert_error(code, output)
    assert "(C API 16, too old)" in steps[2]


def test_no_apt_no_mirror(tmp_path):
    """Fedora, RHEL, conda: no apt sources and no apt-get; the error names each source and the fix."""
    code, output = run_script(tmp_path)
    steps = assert_error(code, output)
    assert "no Debian mirror" in steps[3]
    assert "apt-get not found" in steps[4]


def test_network_unreachable(tmp_path):
    code, output = run_script(tmp_path, NCNN_ORT_DEB_MIRROR=closed_port_url())
    steps = assert_error(code, output)
    assert "network unreachable" in steps[3], steps[3]
    assert "apt-get not found" in steps[4]


def test_ubuntu_like_apt(tmp_path, mirror):
    """apt sources naming an Ubuntu suite: the pool has no such file, and the suite apt-get would ask for
    does not exist there. With apt-get on PATH, the real apt-get runs against the local server."""
    base, _ = mirror
    apt_etc = tmp_path / "ubuntu-apt"
    (apt_etc / "sources.list.d").mkdir(parents=True)
    (apt_etc / "sources.list.d" / "ubuntu.sources").write_text(
        f"Types: deb\nURIs: {base}/ubuntu\nSuites: noble noble-updates\nComponents: main universe\n\n"
        f"Types: deb\nURIs: {base}/ubuntu-security\nSuites: noble-security\nComponents: main\n")
    apt_get = shutil.which("apt-get")
    path = os.path.dirname(apt_get) if apt_get else None
    code, output = run_script(tmp_path, path=path, NCNN_ORT_APT_ETC=apt_etc)
    steps = assert_error(code, output)
    assert f"{base}/ubuntu/{POOL}/" in steps[3] and "not found (HTTP 404)" in steps[3], steps[3]
    if apt_get and os.geteuid() == 0:
        assert "not found" in steps[4] and "trixie" in steps[4], steps[4]
    else:
        assert steps[4].startswith("4. apt-get download"), steps[4]


def test_hash_mismatch(tmp_path, mirror):
    base, folder = mirror
    (folder / POOL).mkdir(parents=True)
    deb = make_deb()
    (folder / POOL / DEB_NAME).write_bytes(deb)
    code, output = run_script(tmp_path, NCNN_ORT_DEB_MIRROR=base, NCNN_ORT_DEB_VERSION=VERSION,
                              NCNN_ORT_DEB_SHA256="0" * 64)
    steps = assert_error(code, output)
    assert f"hash mismatch (got SHA-256 {hashlib.sha256(deb).hexdigest()}, pinned {'0' * 64})" in steps[3], steps[3]
    assert not list((tmp_path / "work").rglob("*.h")), "nothing unpacked from a file that failed its hash"


def test_pinned_deb_from_the_mirror_then_offline(tmp_path, mirror):
    base, folder = mirror
    (folder / POOL).mkdir(parents=True)
    deb = make_deb(api=21)
    (folder / POOL / DEB_NAME).write_bytes(deb)
    pins = dict(NCNN_ORT_DEB_VERSION=VERSION, NCNN_ORT_DEB_SHA256=hashlib.sha256(deb).hexdigest())
    code, output = run_script(tmp_path, NCNN_ORT_DEB_MIRROR=base, **pins)
    assert code == 0, output
    include = tmp_path / "work" / f"libonnxruntime-dev_{VERSION}" / "usr" / "include" / "onnxruntime"
    assert f"onnxruntime headers: {include} (Debian libonnxruntime-dev {VERSION}, downloaded, C API 21)" in output
    assert f"{POOL}/libonnxruntime-dev_9.9.9%2btest-1_amd64.deb" in output  # '+' escaped as apt does
    # Unpacked once: a rebuild without network reuses it.
    code, output = run_script(tmp_path, NCNN_ORT_DEB_MIRROR=closed_port_url(), **pins)
    assert code == 0 and "unpacked before, C API 21" in output, output
    # ... but not under another pin.
    code, output = run_script(tmp_path, NCNN_ORT_DEB_MIRROR=closed_port_url(), NCNN_ORT_DEB_VERSION=VERSION,
                              NCNN_ORT_DEB_SHA256="1" * 64)
    assert code != 0 and "network unreachable" in tried(output)[3], output


def test_mirror_read_from_one_line_sources_list(tmp_path, mirror):
    base, folder = mirror
    (folder / "debian" / POOL).mkdir(parents=True)
    deb = make_deb()
    (folder / "debian" / POOL / DEB_NAME).write_bytes(deb)
    apt_etc = tmp_path / "old-apt"
    (apt_etc / "sources.list.d").mkdir(parents=True)
    (apt_etc / "sources.list").write_text(
        f"# a comment\ndeb-src {base}/src bookworm main\ndeb [arch=amd64] {base}/debian/ bookworm main\n")
    code, output = run_script(tmp_path, NCNN_ORT_APT_ETC=apt_etc, NCNN_ORT_DEB_VERSION=VERSION,
                              NCNN_ORT_DEB_SHA256=hashlib.sha256(deb).hexdigest())
    assert code == 0 and "downloaded, C API 21" in output, output
