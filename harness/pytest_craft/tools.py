"""Where the harness finds craft's programs and its gRPC stubs, and how a
failed test is replayed: shared by the cluster manager (craftd,
proto/raft.proto), craft_proxy.py (craft-proxy, proto/proxy.proto) and
the conftests of tests/blackbox and tests/proxy."""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GRPC_PLUGIN = "/usr/bin/grpc_python_plugin"


def built(env, default):
    """A program of craft: $env, or `default` under the repository (a
    relative $env is taken from the repository root too)."""
    p = Path(os.environ.get(env) or default)
    return p if p.is_absolute() else REPO_ROOT / p


def python_stubs(name, outdir, error):
    """Generates <name>_pb2 and <name>_pb2_grpc from proto/<name>.proto into
    outdir (never committed) with protoc and Debian's gRPC plugin, imports
    them and returns (pb, pb_grpc); raises `error` if protoc fails."""
    proto = REPO_ROOT / "proto" / f"{name}.proto"
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = ["protoc", f"-I{proto.parent}", f"--python_out={outdir}",
           f"--grpc_out={outdir}", f"--plugin=protoc-gen-grpc={GRPC_PLUGIN}",
           str(proto)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise error(f"protoc failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    if str(outdir) not in sys.path:
        sys.path.insert(0, str(outdir))
    return (importlib.import_module(f"{name}_pb2"),
            importlib.import_module(f"{name}_pb2_grpc"))


def replay_command(item, env):
    """The command that runs pytest item `item` again from the repository
    root, with the environment variables `env` (name -> value; None or ""
    left out)."""
    path = os.path.relpath(str(item.path), REPO_ROOT)
    words = [f"{k}={shlex.quote(str(v))}" for k, v in env.items() if v]
    return " ".join([f"cd {shlex.quote(str(REPO_ROOT))} &&", *words,
                     "/usr/bin/python3 -m pytest",
                     shlex.quote(f"{path}::{item.name}")])
