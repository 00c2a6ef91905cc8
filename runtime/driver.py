"""The host driver: jobs through the CSRs, tensors and statistics through DRAM.

:class:`Accelerator` wraps any :class:`runtime.transport.Transport` (the golden model today, a
cocotb AXI4-Lite + AxiRam bench or a UART bridge later) with the job protocol of
:data:`runtime.regs.JOB_REGS`: program ``dram_size`` once (:meth:`Accelerator.init`), load
the image, then per job ``desc_base``, ``desc_count``, ``ctrl.start``, and poll ``status``
until ``busy`` falls; ``err_code`` and ``err_index`` say how it ended (:class:`JobStatus`).
Waiting is bounded: a job that never ends raises ``TimeoutError`` after ``max_polls`` reads.

:func:`train_step` runs one MLP training step of a :class:`runtime.image.MLPStep`: the ``fp``
job, the loss gradient on the host (softmax cross-entropy of the RAW logits), the ``bp`` job,
and returns the weight gradients and statistics; the weight update (``golden.nn.SGD`` on the
FP32 master copy) and the threshold controllers are the caller's, on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golden import nn
from golden.jobs import STATS_BYTES, ErrorCode, JobError, StatsRecord

from .regs import JOB_REGS
from .transport import Transport

__all__ = ["Accelerator", "JobStatus", "StepResult", "train_step"]


@dataclass(frozen=True)
class JobStatus:
    """How a job ended, as the registers report it."""
    code: ErrorCode
    index: int
    completed: int

    @property
    def ok(self) -> bool:
        return self.code == ErrorCode.OK

    def check(self) -> JobStatus:
        """Raise :class:`golden.jobs.JobError` unless the job succeeded; return ``self``."""
        if not self.ok:
            raise JobError(self.code, self.index)
        return self


class Accelerator:
    """Driver of one accelerator over a transport (module docstring).

    Parameters
    ----------
    transport : Transport
    max_polls : int
        Status reads :meth:`wait` makes before it gives up with ``TimeoutError``.
    """

    def __init__(self, transport: Transport, max_polls: int = 1_000_000):
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be a Transport, not {type(transport).__name__}")
        if isinstance(max_polls, bool) or not isinstance(max_polls, int) or max_polls < 1:
            raise ValueError(f"max_polls must be a positive integer, not {max_polls!r}")
        self.transport = transport
        self.max_polls = max_polls

    async def read_reg(self, name: str) -> dict:
        """The fields of register ``name``."""
        reg = JOB_REGS[name]
        return reg.unpack(await self.transport.read32(reg.offset))

    async def write_reg(self, name: str, **fields) -> None:
        """Write register ``name`` (fields not given are 0)."""
        reg = JOB_REGS[name]
        await self.transport.write32(reg.offset, reg.pack(**fields))

    async def init(self, dram_size: int) -> None:
        """Program the DRAM bound and clear the sticky status bits."""
        await self.write_reg("dram_size", size=dram_size)
        await self.write_reg("status", done=1, error=1, overrun=1)

    async def load(self, writes) -> None:
        """Store ``(addr, bytes)`` pairs in DRAM."""
        for addr, data in writes:
            await self.transport.write_mem(addr, data)

    async def start(self, desc_base: int, count: int) -> None:
        """Start a job; ``RuntimeError`` if one is still running."""
        if (await self.read_reg("status"))["busy"]:
            raise RuntimeError("The accelerator is busy: wait for the running job first")
        await self.write_reg("status", done=1, error=1)
        await self.write_reg("desc_base", addr=desc_base)
        await self.write_reg("desc_count", count=count)
        await self.write_reg("ctrl", start=1)

    async def wait(self) -> JobStatus:
        """Poll until the job ends; its :class:`JobStatus`."""
        for poll in range(self.max_polls):
            if poll:
                await self.transport.pause()
            st = await self.read_reg("status")
            if not st["busy"] and (st["done"] or st["error"]):
                code = ErrorCode((await self.read_reg("err_code"))["code"])
                if bool(st["error"]) == (code == ErrorCode.OK):
                    raise RuntimeError(f"Inconsistent status: error={st['error']} with "
                                       f"err_code {code.name}")
                index = (await self.read_reg("err_index"))["index"]
                done = (await self.read_reg("done_count"))["count"]
                return JobStatus(code, index, done)
        raise TimeoutError(f"The job did not end within {self.max_polls} status reads")

    async def run(self, job, check: bool = True) -> JobStatus:
        """Start ``job`` (anything with ``desc_base`` and ``count``) and wait for it."""
        await self.start(job.desc_base, job.count)
        st = await self.wait()
        return st.check() if check else st

    async def read(self, addr: int, n: int) -> bytes:
        return await self.transport.read_mem(addr, n)

    async def read_tensor(self, tensor):
        """A :class:`runtime.image.TiledTensor` read back and decoded."""
        tiles = {key: await self.read(addr, cap) for key, (addr, cap) in tensor.regions.items()}
        return tensor.decode(tiles)

    async def read_stats(self, regions) -> list:
        """The :class:`golden.jobs.StatsRecord` s at ``(addr, STATS_BYTES)`` regions."""
        return [StatsRecord.unpack(await self.read(addr, STATS_BYTES)) for addr, _ in regions]


@dataclass
class StepResult:
    """What :func:`train_step` returns.

    Attributes
    ----------
    loss : float
    correct : int
    grads : list of numpy.ndarray (float32)
        ``dW`` of every layer, ``(out, in)``.
    records : dict
        ``{"fp": [...], "bp": [...]}`` statistics records, one per descriptor.
    stats : dict
        ``{(stage, kind): FilterStats}`` (:meth:`runtime.image.MLPStep.filter_stats`).
    logits : numpy.ndarray
    """
    loss: float
    correct: int
    grads: list
    records: dict
    stats: dict
    logits: np.ndarray


def step_writes(step, weights, x, thresholds, hyper) -> list:
    """The ``(addr, bytes)`` writes that start a training step of ``step`` (an
    :class:`runtime.image.MLPStep` or :class:`runtime.cnn.CNNStep`): the weights (without
    ``step.update``; with it ``weights`` must be ``None``), the input and the descriptors."""
    if step.update:
        if weights is not None:
            raise ValueError("With the on-chip update the weights are on the chip: pass None "
                             "(load them once with step.state_writes)")
        writes = []
    else:
        writes = step.weight_writes(weights)
    return writes + step.input_writes(x) + step.descriptor_writes(thresholds, hyper)


async def train_step(acc: Accelerator, step, weights, x, labels, thresholds=None,
                     hyper=None) -> StepResult:
    """One training step of ``step`` (an :class:`runtime.image.MLPStep`) on ``acc``.

    Writes the weights (quantized from the FP32 master copy ``weights``), the input and the
    descriptors with ``thresholds``; runs the ``fp`` job, computes the loss gradient on the
    host and writes it, runs the ``bp`` job; reads the logits, the weight gradients and the
    statistics. Raises :class:`golden.jobs.JobError` if a job fails.

    With ``step.update`` the weights live on the chip (load them once with
    ``step.state_writes``): ``weights`` must be ``None``, ``hyper`` gives ``(lr, momentum,
    weight_decay)`` for this step's update, and ``grads`` is ``None`` (dW never leaves the chip).
    """
    await acc.load(step_writes(step, weights, x, thresholds, hyper))
    await acc.run(step.jobs["fp"])
    logits = (await acc.read_tensor(step.tensors["logits"])).value()
    loss, g, correct = nn.softmax_cross_entropy(logits, labels)
    await acc.load(step.loss_grad_writes(g))
    await acc.run(step.jobs["bp"])
    grads = None if step.update else []
    for layer in range(0 if step.update else step.layers):
        dw = await acc.read_tensor(step.tensors[f"dw{layer}"])
        grads.append(dw.value().astype(np.float32))
    records = {job: await acc.read_stats(step.stats_regions(job)) for job in ("fp", "bp")}
    return StepResult(loss, correct, grads, records, step.filter_stats(records), logits)
