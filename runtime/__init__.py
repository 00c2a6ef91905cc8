"""Host runtime of the accelerator: DRAM images and descriptor lists, the driver, transports.

* :mod:`runtime.regs`: the job control registers (an :class:`hdl.regmap.RegisterMap`);
* :mod:`runtime.transport`: the register and memory access the driver needs, and
  :class:`~runtime.transport.GoldenTransport`, an in-memory accelerator over
  :func:`golden.jobs.execute`;
* :mod:`runtime.driver`: :class:`~runtime.driver.Accelerator` (load, start, wait, read back)
  and :func:`~runtime.driver.train_step` (one MLP training step, loss and update on the host);
* :mod:`runtime.image`: :class:`~runtime.image.MLPStep`, the DRAM layout and the descriptor
  lists of one MLP training step (``docs/system.md``, "Job semantics").
"""

__all__ = ["regs", "transport", "driver", "image"]
