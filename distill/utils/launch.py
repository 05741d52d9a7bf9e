"""How this process was launched, read from torchrun's environment, and the command line that launches a run the
same way (the ``interrupted:`` line, a resume's refusal). Imports no torch: the CLI reads it at an interrupt."""
from __future__ import annotations

import os
import sys

from distill.errors import DistillError


def _env_int(name: str) -> int:
    try:
        return max(1, int(os.environ.get(name, "1") or 1))
    except ValueError:
        return 1


def launched_world() -> int:
    """This job's number of ranks: torchrun's ``WORLD_SIZE``; 1 without torchrun."""
    return _env_int("WORLD_SIZE")


def launched_nodes(world: int) -> int:
    """The number of nodes of this job of ``world`` ranks: torchrun's ``WORLD_SIZE / LOCAL_WORLD_SIZE`` (this node's
    ranks); 1 without torchrun, where ``world`` is not its ``WORLD_SIZE``, or where the nodes' ranks differ in number
    (it does not divide: no one ``--nproc_per_node`` launches such a job)."""
    per_node = _env_int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else world
    if world != launched_world() or per_node >= world or world % per_node:
        return 1
    return world // per_node


def main_rank() -> bool:
    """Whether this process is rank 0 (or the only one)."""
    return os.environ.get("RANK", "0").strip() in ("0", "")


def ranks(world: int, nodes: int = 1, say_nodes: bool = False) -> str:
    """``1 process`` / ``2 torchrun ranks`` / ``4 torchrun ranks on 2 nodes`` (``on 1 node`` too with ``say_nodes``:
    beside a run on several)."""
    if world <= 1:
        return "1 process"
    return f"{world} torchrun ranks" + (f" on {nodes} node{'s' * (nodes > 1)}" if nodes > 1 or say_nodes else "")


def distill_command(command: str, world: int, per_node: int | None = None) -> str:
    """``distill COMMAND`` for one process; ``torchrun --nproc_per_node=N -m distill COMMAND`` for N ranks on one node;
    ``torchrun --nnodes=M --nproc_per_node=K`` for ``per_node`` (K) ranks on each of M nodes, with a note that the
    rendezvous flags (``--rdzv-endpoint``...) are the user's: they are not recorded."""
    if world <= 1:
        return f"distill {command}"
    per_node = per_node or world
    if per_node >= world or world % per_node:
        return f"torchrun --nproc_per_node={world} -m distill {command}"
    return f"torchrun --nnodes={world // per_node} --nproc_per_node={per_node} (on each node, with your rendezvous " \
           f"flags) -m distill {command}"


def launched_command(command: str) -> str:
    """:func:`distill_command` for this process's own launch."""
    world = launched_world()
    return distill_command(command, world, world // launched_nodes(world))


def end_process_group(existed: bool) -> None:
    """After a command that finished well under torchrun: every rank meets at a barrier, then the process group the
    command created (``existed``: one was there before it, e.g. an in-process caller's, which is left alone) is
    destroyed. Without this each rank exits with gloo's worker threads still up, and at interpreter shutdown one
    could abort ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489), failing a
    finished run's torchrun. Not after an error: a rank that failed alone would leave the others at the barrier
    (torchtitan destroys only on success too). Imports no torch: without ``torch.distributed`` loaded there is no
    group to end. Where the ranks cannot meet (another rank died after its work), this rank's group is still ended
    and a :class:`~distill.errors.DistillError` says so in one line (the CLI's ``error:``), not a traceback. A Ctrl-C
    in the barrier goes out as it came and leaves the group up (NCCL's destroy waits for pending work)."""
    if existed or not process_group_exists():
        return
    from distill.utils.runtime import Dist, barrier  # lazy: imports torch, loaded already where a group exists

    dist = sys.modules["torch.distributed"]
    rank = dist.get_rank()
    try:
        barrier(Dist(rank, dist.get_world_size()))  # NCCL's with this rank's device, as every barrier
    except RuntimeError as e:  # gloo's "Connection closed by peer", NCCL's errors: DistBackendError is one
        dist.destroy_process_group()
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DistillError(f"rank {rank} finished its work, but the ranks could not meet at the end ({reason}): "
                           "another rank stopped early or timed out; its own output says why") from e
    # not after a Ctrl-C in the barrier (it goes out as it came): NCCL's destroy waits for pending work (review 1 L5)
    dist.destroy_process_group()


def process_group_exists() -> bool:
    """Whether a torch process group is initialized in this process (False where torch.distributed is not loaded)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized())
