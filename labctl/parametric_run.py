"""The parametric experiment's run (Szorkovszky et al. 2014): drive on, both lock-ins capture the
demodulated quadratures of the two oscillators together, the records are analysed (spectral fit of
γ, Δ, χ, μ; Kalman filter; S with its uncertainty) and stored.

Called by ``labctl.runner.Runner`` for sequences with ``experiment: parametric``; shares its
set-up, safe state, run file and report. Each of the sequence's ``trials`` is one record.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from .errors import EXIT_OK, InputError
from .sequence.apply import apply_program, enable_outputs


def _lockins(runner: Any) -> dict[int, Any]:
    names = runner.cfg.instruments_with_role("lockin")
    if len(names) != 2:
        raise InputError(f"the parametric experiment needs two lock-ins (role: lockin) in {runner.cfg.path}; "
                         f"found {len(names)}", file=runner.cfg.path,
                         fix="add two SR865A entries with options {oscillator: 1} and {oscillator: 2}")
    out = {}
    for i, n in enumerate(sorted(names)):
        inst = runner.station[n]
        osc = int(runner.cfg.instruments[n].config.options.get("oscillator", i + 1))
        out[osc] = inst
    if sorted(out) != [1, 2]:
        raise InputError("the lock-ins must be oscillators 1 and 2", file=runner.cfg.path,
                         fix="set options: {oscillator: 1} and {oscillator: 2}")
    return out


def run_parametric(runner: Any) -> int:
    from .physics.estimation import analyse_records, parametric_settings

    seq, station = runner.seq, runner.station
    ps = parametric_settings(seq)
    li = _lockins(runner)
    twin = None
    if runner.opts.sim:
        from sim_instruments.twin.parametric import ParametricTwin

        twin = ParametricTwin(ps.physical_model(), scale=ps.scale, seed=runner.opts.seed)
        twin.attach(station.lab)
    for osc, inst in li.items():
        name = inst.name
        runner.with_retry(name, "setting the reference", lambda inst=inst: inst.configure_reference(
            ps.reference_frequency, source="internal") if ps.reference_frequency else None)
        runner.with_retry(name, "setting the filter", lambda inst=inst: inst.configure_filter(ps.time_constant, ps.slope_db))
        if ps.sensitivity:
            runner.with_retry(name, "setting the sensitivity", lambda inst=inst: setattr(inst, "sensitivity", ps.sensitivity))
    if runner.compiled is not None:
        for name, prog in runner.compiled.points[0].items():
            runner.with_retry(name, "programming the drive", lambda name=name, prog=prog: apply_program(station[name], prog))
            runner._programs_applied[name] = prog
            runner.with_retry(name, "switching the drive on", lambda name=name, prog=prog: enable_outputs(station[name], prog))
    if not runner.opts.sim and ps.settle:
        time.sleep(ps.settle)  # the oscillators reach their steady state (in simulation the twin starts there)
    n_rec = int(runner.trials[0])
    results = []
    arrays: dict[str, Any] = {}
    for r in range(n_rec):
        rates = {}
        for osc, inst in li.items():
            rates[osc] = runner.with_retry(inst.name, "configuring the capture",
                                           lambda inst=inst: inst.configure_capture(ps.n_samples, ps.sample_rate))
            runner.with_retry(inst.name, "arming the capture", lambda inst=inst: inst.start_capture("one", "trigger"))
        if twin is not None:
            twin.fire(station.lab)  # in the lab the drive generator's marker starts both captures
        data = []
        for osc in (1, 2):
            inst = li[osc]
            runner.with_retry(inst.name, "waiting for the capture", lambda inst=inst: inst.wait_capture(
                ps.n_samples * 8, ps.duration + inst.capture_timeout))
            inst.stop_capture()
            data.append(runner.with_retry(inst.name, "reading the capture", lambda inst=inst, osc=osc: inst.read_capture(
                ps.n_samples, rate=rates[osc]).data))
        n = min(ps.n_samples, *(len(d) for d in data))  # the capture length is rounded up to whole kB
        records = np.hstack([d[:n] for d in data]).astype(np.float64)
        extra = {}
        if twin is not None and twin.last_run is not None:
            extra = dict(truth=np.asarray(twin.last_run.truth)[:n], true_model=ps.physical_model(), true_scale=ps.scale)
        an = analyse_records(records, ps.lockin(), model=ps.model, nbar=ps.nbar, eta=ps.eta,
                             gamma_diff=ps.gamma_diff, blocks=ps.blocks, fix=ps.fixed_values(), **extra)
        summary = an.summary()
        results.append(summary)
        arrays[f"record{r:03d}/quadratures_v"] = records.astype(np.float32)
        for k, v in an.arrays().items():
            arrays[f"record{r:03d}/{k}"] = np.asarray(v)
        if twin is not None and twin.last_run is not None:
            arrays[f"record{r:03d}/truth"] = np.asarray(twin.last_run.truth, dtype=np.float32)[:n]
        runner.journal.event("parametric_record", record=r, summary=summary)
    runner.report_extra = {"trials": n_rec, "parametric": {"settings": ps.as_dict(), "records": results,
                                          "S": results[-1].get("S") if results else None}}
    runner.parametric_arrays = arrays
    return EXIT_OK
