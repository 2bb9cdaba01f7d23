"""The library's settings: the fields Dynamo's engine reads, parsed from the engine's own command-line flags.

Two flags exist only here, to choose the stand-in's behaviour: ``--standin-abort`` (what ``abort_request``
does) and ``--standin-token-interval`` (seconds between generated tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

ABORT_BEHAVIOURS = ("ends", "forgets", "ignores", "finishes")


@dataclass
class ServerArgs:
    model: str = "standin/tokenspeed-tiny"
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    disaggregation_mode: str = "null"
    disaggregation_transfer_backend: str = "mooncake"
    disaggregation_bootstrap_port: int = 8998
    prefix_granularity: int = 16
    kv_events_config: str | None = None
    enable_prefix_caching: bool = True
    max_model_len: int = 4096
    max_total_tokens: int = 65536
    chunked_prefill_size: int = 2048
    max_num_seqs: int = 64
    data_parallel_size: int = 1
    stream_output: bool = False
    standin_abort: str = "ends"
    standin_token_interval: float = 0.002

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-path", dest="model_path", default=ServerArgs.model)
        parser.add_argument("--served-model-name", default=None)
        parser.add_argument("--host", default=ServerArgs.host)
        parser.add_argument("--disaggregation-mode", default="null", choices=["null", "prefill", "decode"])
        parser.add_argument("--disaggregation-transfer-backend", default="mooncake")
        parser.add_argument("--disaggregation-bootstrap-port", type=int, default=8998)
        parser.add_argument("--prefix-granularity", "--block-size", dest="prefix_granularity", type=int, default=16)
        parser.add_argument("--kv-events-config", default=None)
        parser.add_argument("--standin-abort", choices=ABORT_BEHAVIOURS, default="ends")
        parser.add_argument("--standin-token-interval", type=float, default=0.002)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> ServerArgs:
        names = [f.name for f in dataclasses.fields(cls)]
        given: dict[str, Any] = {name: getattr(args, name) for name in names if hasattr(args, name)}
        given["model"] = args.model_path
        return cls(**given)
