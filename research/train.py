"""The one trainer: `train_and_evaluate(config, workdir) -> final metrics`.

Reads top to bottom: config and workdir checks, mesh, experiment (data, model,
loss — the paper-specific part, see `research/experiment.py`), optimizer, sharded
state from `jax.eval_shape`, restore-or-init, a jitted and donated train step,
the loop (logging, evaluation, checkpoints, phases, preemption), the final report.

Every batch is a pure function of (config.seed, step), the state holds the step,
and the checkpoint holds the state: stopping and resuming gives bit-identical
parameters on CPU. With `train.num_seeds` = S > 1 the state holds S replicas
(seeds seed..seed+S-1) trained by one vmapped step; each replica's rows and final
metrics go to `workdir/seed_<seed>/`, as if it were a run of its own.

`run(config, workdir)` is what the entry point calls: the trainer for trained
tasks, the task's own runner for protocols (see `research/experiment.py`).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import checkpoint
from research import compiling
from research import config as config_lib
from research import experiment as experiment_lib
from research import flops as flops_lib
from research import metrics as metrics_lib
from research import optim
from research import sharding
from research import stats
from research import workdir as workdir_lib
from research.errors import ConfigError

FINAL_METRICS = "final_metrics.json"


class NonFiniteError(RuntimeError):
  pass


def run(config, workdir: str) -> dict[str, Any]:
  """Runs any registered task: its runner if it has one, else the trainer."""
  entry = experiment_lib.EXPERIMENTS.get(config.task)
  if not entry.meta.get("runner"):
    return train_and_evaluate(config, workdir)
  # A protocol's own runner: checked before anything is written, then its workdir is
  # claimed and labelled like a trainer run's.
  if entry.meta.get("validate"):
    entry.meta["validate"](config)
  workdir_lib.check_workdir(workdir)
  identity = {"task": config.task}
  workdir_lib.check_identity(workdir, identity)
  with workdir_lib.claim(workdir, enabled=jax.process_index() == 0):
    if jax.process_index() == 0:
      workdir_lib.check_identity(workdir, identity)
      workdir_lib.write_identity(workdir, identity)
    return entry.obj(config, workdir)


def build_experiment(config, mesh) -> experiment_lib.Experiment:
  entry = experiment_lib.EXPERIMENTS.get(config.task)
  if entry.meta.get("runner"):
    raise ConfigError(f"config.task={config.task!r} is a protocol with its own runner, "
                      f"not a trainer experiment")
  return entry.obj(config, mesh)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming whatever it holds); returns the final metrics.

  The workdir is this run's alone while it trains (`research.workdir.claim`)."""
  config_lib.check_common(config)
  workdir_lib.check_workdir(workdir)
  workdir_lib.fail_if_in_use(workdir)
  lock = []  # Taken by `_train_and_evaluate` before its first write.
  try:
    return _train_and_evaluate(config, workdir, lock)
  finally:
    for held in lock:
      held.release()


def _train_and_evaluate(config, workdir: str, lock: list) -> dict[str, Any]:
  # --------------------------------------------------------------------------
  # Config and workdir: everything that can be checked is checked before anything
  # is written: the saved config, the workdir's identity, the checkpoints' shapes,
  # the compiled step's memory.
  # --------------------------------------------------------------------------
  is_main = jax.process_index() == 0
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      config_lib.check_resume_compatible(f.read(), config)
  num_seeds = config.train.num_seeds
  seeds = [config.seed + s for s in range(num_seeds)]

  # --------------------------------------------------------------------------
  # Mesh and sharding rules.
  # --------------------------------------------------------------------------
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules_from_config(config.sharding.rules)
  data_size = sharding.batch_axis_size(mesh, rules)
  micro_batch = config.train.batch_size // config.train.grad_accum_steps
  config_lib.require(
      micro_batch % data_size == 0,
      f"config.train.batch_size={config.train.batch_size} (per micro-batch {micro_batch}) is not "
      f"divisible by the {data_size}-way batch sharding of mesh {dict(mesh.shape)}; use a "
      f"multiple of {data_size}")

  # --------------------------------------------------------------------------
  # Experiment: data, model, loss and evaluation of one paper.
  # --------------------------------------------------------------------------
  exp = build_experiment(config, mesh)
  tx = optim.make_optimizer(config)
  frozen = {} if exp.frozen is None else exp.frozen  # Step inputs that never train.

  # --------------------------------------------------------------------------
  # Train state: shapes and shardings from eval_shape, so no host ever holds a
  # full replicated copy. The workdir must hold this experiment or nothing; then
  # the newest readable checkpoint is restored (or the state initialised below).
  # --------------------------------------------------------------------------
  init_keys, train_keys = replica_keys(seeds)
  state_sharding, init_fn = state_init(exp, tx, rules, mesh, num_seeds)
  abstract = checkpoint.abstract_like(jax.eval_shape(init_fn, init_keys), state_sharding)
  identity = {"task": config.task, "state": workdir_lib.state_signature(abstract)}
  workdir_lib.check_identity(workdir, identity)
  state, meta, start_over = None, None, False
  seen_steps = ocp_steps(workdir)
  if os.path.isdir(checkpoint.directory(workdir)):
    mngr = checkpoint.manager(workdir, max_to_keep=config.train.keep_checkpoints)
    try:
      state, meta = checkpoint.restore_latest(mngr, abstract)
    except checkpoint.CheckpointsUnreadable:
      if not config.train.restart_if_unreadable:
        raise
      start_over = True  # They are moved aside once the run owns the workdir (below).
    mngr.close()
  final_path = os.path.join(workdir, FINAL_METRICS)
  if state is not None:
    _say(f"resuming from step {meta['step']} in {workdir}")
    if meta["step"] >= config.train.num_steps and os.path.exists(final_path):
      _say(f"run in {workdir} is already finished at step {meta['step']}; "
           f"raise --config.train.num_steps to train further")
      with open(final_path) as f:
        return json.load(f)
  start_step = 0 if state is None else int(meta["step"])

  # --------------------------------------------------------------------------
  # Train step: jitted with explicit shardings, state donated; one call runs up to
  # `train.steps_per_call` updates and stops at every log/eval/checkpoint/phase step.
  # Compiled from the abstract state, so a step that cannot fit in memory is refused
  # before anything is written.
  # --------------------------------------------------------------------------
  step_fns = StepFunctions(exp, tx, mesh, rules, state_sharding, config, frozen)
  batches = host_batches(exp, train_keys, mesh, rules, config, (meta or {}).get("data"),
                         start_step)
  first = _call_length(start_step, config.train, config.train.num_steps, exp.phases)
  compiled = step_fns.compiled(first, abstract, frozen, batches.spec(start_step, first),
                               train_keys)
  check_memory(compiled, config)

  # --------------------------------------------------------------------------
  # The workdir is now this experiment's: identity, config, checkpoints.
  # --------------------------------------------------------------------------
  if is_main:
    lock.append(workdir_lib.acquire(workdir))
    # Under the lock, again: another run may have written since the checks above.
    if os.path.exists(config_path):
      with open(config_path) as f:
        config_lib.check_resume_compatible(f.read(), config)
    workdir_lib.check_identity(workdir, identity)
    if sorted(ocp_steps(workdir)) != sorted(seen_steps):
      raise ConfigError(f"the checkpoints in {workdir} changed while this run was starting (a "
                        f"run that just stopped?); run the command again")
    if start_over:
      _say(f"no checkpoint could be read; starting over (they were moved to "
           f"{checkpoint.set_aside(workdir)})")
    workdir_lib.write_identity(workdir, identity)
    workdir_lib.write_atomic(config_path, config_lib.to_json(config))
  mngr = checkpoint.manager(workdir, max_to_keep=config.train.keep_checkpoints)
  if state is None:
    state = initial_state(init_fn, state_sharding, init_keys)
  flops_per_step = step_fns.update_flops(first, abstract, frozen, batches.spec(start_step, 1),
                                         train_keys) / num_seeds
  peak = config.peak_flops or _process_peak()
  info = dict(exp.info, flops_per_step=flops_per_step, peak_flops_per_device=peak,
              peak_matmul_n=None if config.peak_flops else PEAK_MATMUL_N,
              devices=jax.device_count(), processes=jax.process_count(),
              mesh=dict(mesh.shape), num_seeds=num_seeds,
              memory_estimate_bytes=flops_lib.compiled_memory(compiled).get("peak_estimate"),
              **flops_lib.machine_info())
  _say(f"{config.task}: " + ", ".join(f"{k}={v}" for k, v in info.items()))

  # --------------------------------------------------------------------------
  # Loop: log, evaluate, checkpoint; SIGTERM/SIGINT save and stop cleanly.
  # --------------------------------------------------------------------------
  writers = replica_writers(workdir, seeds, config.train.tensorboard)
  for w in writers:
    w.write(start_step, info, kind="info")
  stop = _PreemptionFlag()
  num_steps = config.train.num_steps
  bar = _progress(start_step, num_steps, enabled=is_main and config.train.progress)
  last_eval: list[dict[str, Any]] = [{} for _ in seeds]
  t_last, step_last = time.perf_counter(), start_step
  phase_ends = {p for p in exp.phases if 0 < p <= num_steps}
  saved = {start_step}

  def save(step, force=False):
    if step not in saved:  # A preemption may land right after a periodic save.
      meta = {"step": step, "seed": config.seed, "data": batches.state(step)}
      if checkpoint.save(mngr, step, state, meta, force=force):
        saved.add(step)

  # `frozen` never changes in a run: each replica's view is sliced once (and held: a second
  # copy of the per-seed arrays, which are data and keys, not weights).
  frozen_views = [replica_frozen(frozen, s, num_seeds) for s in range(num_seeds)]

  def evaluate(step):
    for s, w in enumerate(writers):
      last_eval[s] = exp.evaluate(replica_params(state, s, num_seeds), frozen_views[s], step)
      w.write(step, last_eval[s], kind="eval")
    bar.write_eval(step, last_eval[0])

  try:
    step = start_step
    while step < num_steps:
      n = _call_length(step, config.train, num_steps, phase_ends)
      batch = batches.take(step, n)
      state, train_metrics = step_fns.call(n, state, frozen, batch, train_keys,
                                           batches.spec(step, n))
      step += n
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
        m = sharding.to_host(train_metrics)
        now = time.perf_counter()
        steps_per_s = (step - step_last) / max(now - t_last, 1e-9)
        t_last, step_last = now, step
        speed = dict(steps_per_s=steps_per_s, flops_per_step=flops_per_step,
                     flops_per_s=flops_per_step * steps_per_s,
                     mfu=flops_per_step * steps_per_s / peak if peak else 0.0)
        for s, w in enumerate(writers):
          row = {k: float(np.asarray(v).reshape(-1)[s]) for k, v in m.items()}
          w.write(step, dict(row, **speed), kind="train")
          if s == 0:
            bar.update(step, dict(row, **speed))
        runs = np.asarray(m["nonfinite_run"]).reshape(-1)
        if runs.max() and (config.train.on_nonfinite == "halt"
                           or runs.max() >= config.train.max_nonfinite_steps):
          save(step, force=True)
          raise NonFiniteError(
              f"{int(runs.max())} consecutive steps up to step {step} had a non-finite loss, "
              f"gradient or update (updates were skipped; the last good state is saved in "
              f"{workdir}). Lower the learning rate, enable optimizer.grad_clip, or check the data")
      if step % config.train.eval_every == 0 or is_last or step in phase_ends:
        evaluate(step)
      if step % config.train.checkpoint_every == 0 or is_last:
        save(step, force=is_last)
      if stop.requested:
        save(step, force=True)
        checkpoint.wait(mngr)
        _say(f"stopped by {stop.signal_name} at step {step}; checkpoint saved. Run the same "
             f"command to resume.")
        raise SystemExit(128 + stop.signum)
    bad = int(np.asarray(sharding.to_host(state["nonfinite_run"])).max())
    if bad:  # The run ended on skipped updates: it did not recover, and must say so.
      save(num_steps, force=True)
      raise NonFiniteError(
          f"the last {bad} updates up to step {num_steps} were non-finite and skipped (the last "
          f"good state is saved in {workdir}); lower the learning rate, enable "
          f"optimizer.grad_clip, or check the data")
  finally:
    stop.restore()
    bar.close()
    batches.close()
    try:
      checkpoint.wait(mngr)
    finally:
      for w in writers:
        w.close()

  # --------------------------------------------------------------------------
  # Final report: a table on stdout, figures and final_metrics.json in the workdir.
  # --------------------------------------------------------------------------
  finals = []
  for s, seed in enumerate(seeds):
    params = replica_params(state, s, num_seeds)
    if not last_eval[s]:  # Resumed exactly at the end: evaluate the restored state.
      last_eval[s] = exp.evaluate(params, frozen_views[s], num_steps)
    final = {"step": num_steps, **last_eval[s]}
    if exp.report is not None:
      _say(exp.report(params, frozen_views[s], writers[s].workdir, final))
    finals.append(final)
  final = finals[0] if num_seeds == 1 else seeds_summary(seeds, finals)
  if is_main:
    if num_seeds > 1:
      for w, f in zip(writers, finals):
        workdir_lib.write_atomic(os.path.join(w.workdir, FINAL_METRICS), final_json(f))
    workdir_lib.write_atomic(final_path, final_json(final))
  mngr.close()
  return final


def ocp_steps(workdir: str) -> list[str]:
  """The finished checkpoint directories (step numbers) a workdir holds now."""
  d = checkpoint.directory(workdir)
  return [n for n in os.listdir(d) if n.isdigit()] if os.path.isdir(d) else []


def final_json(final: dict) -> str:
  """final_metrics.json: valid JSON (no bare NaN); a non-finite metric is written as
  null and named under "nonfinite_metrics", so it never passes unnoticed."""
  bad = []

  def clean(v, key):
    if isinstance(v, float) and not np.isfinite(v):
      bad.append(key)
      return None
    if isinstance(v, list):
      return [clean(x, key) for x in v]
    if isinstance(v, dict):
      return {k: clean(x, f"{key}.{k}" if key else k) for k, x in v.items()}
    return v

  out = clean(final, "")
  if bad:
    out["nonfinite_metrics"] = sorted(set(bad))
  return json.dumps(out, allow_nan=False)


def check_memory(compiled, config) -> None:
  """Refuses a step whose peak memory (XLA's estimate) cannot fit in the device's."""
  need = flops_lib.compiled_memory(compiled).get("peak_estimate")
  device = jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    limit, where = int(stats["bytes_limit"]), f"{device.device_kind} memory"
  elif device.platform == "cpu":
    # Fake CPU devices share the host's memory: all of them together must fit.
    need = need and need * len(jax.local_devices())
    limit, where = host_memory_available(), "available host memory"
  else:
    return
  if need and limit and need > limit:
    gib = lambda b: f"{b / 2**30:.1f} GiB"
    raise ConfigError(
        f"the train step needs about {gib(need)} (XLA's estimate) but the {where} is "
        f"{gib(limit)}; lower config.train.batch_size, raise train.grad_accum_steps, shorten "
        f"data.seq_len or set model.remat=True")


def host_memory_available() -> int:
  """MemAvailable from /proc/meminfo plus what this process holds (0 if unknown)."""
  try:
    with open("/proc/meminfo") as f:
      fields = dict(line.split(":", 1) for line in f)
    available = int(fields["MemAvailable"].split()[0]) * 1024
    with open("/proc/self/statm") as f:
      rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return available + rss
  except (OSError, KeyError, ValueError):
    return 0


# ----------------------------------------------------------------------------
# Replicas (train.num_seeds): keys, state, per-replica views and metric files.
# ----------------------------------------------------------------------------
def replica_keys(seeds):
  """(init keys, train keys): per seed, split(key(seed)); stacked when several."""
  pairs = [jax.random.split(jax.random.key(s)) for s in seeds]
  if len(seeds) == 1:
    return pairs[0][0], pairs[0][1]
  return jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])


def new_state_fn(exp: experiment_lib.Experiment, tx):
  """key -> train state (params boxed with logical axes; unbox after eval_shape)."""
  def init_state(key):
    params = exp.init_params(key)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "nonfinite_total": jnp.zeros((), jnp.int32),
            "nonfinite_run": jnp.zeros((), jnp.int32)}
  return init_state


def state_init(exp, tx, rules, mesh, num_seeds: int):
  """(state shardings, keys -> unboxed state). Replicas add a leading replicated axis."""
  init_state = new_state_fn(exp, tx)
  one_key = jax.random.key(0)
  shardings = sharding.tree_shardings(jax.eval_shape(init_state, one_key), rules, mesh)
  if num_seeds == 1:
    return shardings, lambda key: nn.unbox(init_state(key))
  shardings = jax.tree.map(lambda s: sharding.with_leading_axis(s), shardings)
  return shardings, jax.vmap(lambda key: nn.unbox(init_state(key)))


def initial_state(init_fn, state_sharding, init_keys):
  """The fresh train state, placed with its shardings (compiled as a run-once program)."""
  return jax.jit(init_fn, out_shardings=state_sharding,
                 compiler_options=compiling.run_once())(init_keys)


@functools.cache
def _take():
  """Replica i of a tree with a leading seed axis; `i` traced: one compilation per tree
  (built on first use: the backend must not start when this module is imported)."""
  return jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree),
                 compiler_options=compiling.run_once())


def replica_params(state, s: int, num_seeds: int):
  """Replica s's params (only they are sliced: evaluation reads no optimizer state)."""
  return state["params"] if num_seeds == 1 else _take()(state["params"], np.int32(s))


def replica_frozen(frozen, s: int, num_seeds: int):
  """`frozen` as replica s sees it: its slice of `frozen["per_seed"]`. Replicated arrays
  (every process holds all of them) are sliced on the host and placed again: nothing to
  compile (the jitted slice of the DKVB toy's per-seed arrays compiled for 0.1 s)."""
  if num_seeds == 1 or "per_seed" not in frozen:
    return frozen
  per_seed = frozen["per_seed"]
  if not all(isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.NamedSharding)
             and x.is_fully_replicated for x in jax.tree.leaves(per_seed)):
    return dict(frozen, per_seed=_take()(per_seed, np.int32(s)))
  place = lambda x: sharding.put_replicated(sharding.to_host(x)[s], x.sharding.mesh)
  return dict(frozen, per_seed=jax.tree.map(place, per_seed))


def replica_writers(workdir: str, seeds, tensorboard: bool):
  if len(seeds) == 1:
    return [metrics_lib.MetricWriter(workdir, tensorboard=tensorboard)]
  return [metrics_lib.MetricWriter(os.path.join(workdir, f"seed_{s}"), tensorboard=tensorboard)
          for s in seeds]


def seeds_summary(seeds, finals: list[dict]) -> dict:
  """final_metrics.json of a vmapped-seeds run: per seed, and for every metric its mean
  over seeds with `<key>_se` the standard error over the n = len(seeds) seeds. A seed's
  own `<key>_se` (over its evaluation sequences) stays in `per_seed`: it is not averaged
  into the name that holds the spread over seeds."""
  out = {"step": finals[0]["step"], "seeds": list(seeds), "per_seed": finals}
  for key in finals[0]:
    if key.endswith("_se") and key[:-3] in finals[0]:
      continue
    values = [f.get(key) for f in finals]
    if key != "step" and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                             for v in values):
      out[key], out[f"{key}_se"], _ = stats.mean_se(values)
  return out


# ----------------------------------------------------------------------------
# The train step and its compiled forms.
# ----------------------------------------------------------------------------
def batch_key(train_key, step):
  """The key a batch is sampled from, at state step `step` (both pipelines)."""
  return jax.random.split(jax.random.fold_in(train_key, step))[0]


def make_train_step(exp: experiment_lib.Experiment, tx, batch_sharding, accum: int = 1):
  """`step(state, frozen, batch, train_key) -> (state, metrics)`, a pure function.

  The batch is sampled inside the step from `batch_key(train_key, step)`, or
  arrives as an argument built from that key (host pipeline). An update whose
  loss, gradient or result is not finite leaves params and optimizer state
  unchanged and is counted in the state; so does a step the experiment marks
  inactive (without being counted). At the start of a phase the optimizer state is
  re-initialised if the experiment asks for it.
  """

  def grads_of(params, frozen, batch, key, step):
    k_batch, k_loss = jax.random.split(key)
    if batch is None:  # Device pipeline: sample inside the step.
      batch = exp.sample_batch(frozen, k_batch, step)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    grad_fn = jax.value_and_grad(exp.loss_fn, has_aux=True)
    if accum == 1:
      (_, metrics), grads = grad_fn(params, frozen, batch, k_loss)
      return grads, metrics
    # Gradient accumulation: the same global batch in `accum` sequential slices.
    micro = jax.tree.map(lambda x: x.reshape(accum, -1, *x.shape[1:]), batch)

    def body(carry, xs):
      mb, k = xs
      mb = jax.lax.with_sharding_constraint(mb, batch_sharding)
      (_, m), g = grad_fn(params, frozen, mb, k)
      return jax.tree.map(jnp.add, carry, (g, m)), None

    (_, m_shape), g_shape = jax.eval_shape(
        grad_fn, params, frozen, jax.tree.map(lambda x: x[0], micro), k_loss)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (g_shape, m_shape))
    (grads, metrics), _ = jax.lax.scan(body, zeros, (micro, jax.random.split(k_loss, accum)))
    return jax.tree.map(lambda x: x / accum, (grads, metrics))

  starts = jnp.asarray(exp.phases, jnp.int32) if exp.phases else None

  def train_step(state, frozen, batch, train_key):
    key = jax.random.fold_in(train_key, state["step"])
    params, opt_state = state["params"], state["opt_state"]
    if exp.reset_optimizer and starts is not None:  # A new phase starts afresh.
      fresh = tx.init(params)
      reset = jnp.any(state["step"] == starts)
      opt_state = jax.tree.map(lambda f, o: jnp.where(reset, f, o), fresh, opt_state)
    grads, metrics = grads_of(params, frozen, batch, key, state["step"])
    grad_norm = optax.global_norm(grads)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    # Finite loss, gradient AND result: an update that turns finite parameters
    # non-finite (an infinite learning rate) is a bad step too.
    finite = jnp.isfinite(grad_norm) & _all_finite(metrics) & _all_finite(new_params) \
        & _all_finite(new_opt_state)
    active = jnp.asarray(True) if exp.active is None else exp.active(frozen, state["step"])
    # One materialised flag: unfenced, XLA fused the whole finiteness reduction into
    # every leaf's select (a program quadratic in the leaves, twice the compile time).
    take = jax.lax.optimization_barrier(finite & active)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(take, n, o), new, old)
    bad = (active & ~finite).astype(jnp.int32)
    new_state = {"step": state["step"] + 1, "params": keep(new_params, params),
                 "opt_state": keep(new_opt_state, opt_state),
                 "nonfinite_total": state["nonfinite_total"] + bad,
                 "nonfinite_run": (state["nonfinite_run"] + bad) * bad}
    metrics = dict(metrics, grad_norm=grad_norm, nonfinite=bad,
                   nonfinite_total=new_state["nonfinite_total"],
                   nonfinite_run=new_state["nonfinite_run"])
    return new_state, metrics

  return train_step


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class StepFunctions:
  """The jitted calls of `n` updates `(state, frozen, batches, train_keys) -> (state,
  metrics)` (a loop over n train steps; the metrics of the last). With the device pipeline
  one program serves every `n` up to `train.steps_per_call` (the length is an argument: a
  call cut short by a log, eval or phase step compiles nothing new); host batches arrive
  stacked `n` deep, so there it is one program per distinct `n`. Replicas are vmapped;
  `frozen` keeps the shardings it was placed with."""

  def __init__(self, exp, tx, mesh, rules, state_sharding, config, frozen):
    self.num_seeds = config.train.num_seeds
    self.host = exp.host_batch is not None
    self.any_length = config.train.steps_per_call > 1 and not self.host
    batch_sharding = sharding.batch_sharding(mesh, rules)
    self._accum = config.train.grad_accum_steps
    self._step = make_train_step(exp, tx, batch_sharding, self._accum)
    self._whole_step = lambda: make_train_step(exp, tx, batch_sharding, 1)
    self._frozen_sharding = jax.tree.map(lambda x: x.sharding, frozen)
    self._frozen_axes = (None if self.num_seeds == 1 else
                         {k: (0 if k == "per_seed" else None) for k in frozen})
    self._state_sharding = state_sharding
    lead = 0 if self.num_seeds == 1 else 1  # Host batches: [replicas,] [n,] batch, ...
    self._batch_sharding = sharding.with_leading_axis(batch_sharding, lead + 1)
    self._batch_sharding1 = sharding.with_leading_axis(batch_sharding, lead)
    self._mesh, self._rules = mesh, rules
    self._compiled: dict[int | None, Any] = {}
    self._flops_before: dict[int | None, float] = {}  # Counted before optimisation.
    self._lengths: dict[int, jax.Array] = {}

  def _calls(self, n: int | None, step=None):
    """The call of `n` updates; `n=None`: of `length` updates, its last argument."""
    step = step or self._step

    def call(state, frozen, batches, train_key, length=None):
      if n == 1:
        return step(state, frozen, batches, train_key)
      if n is None:  # Device pipeline: batches are sampled inside the step.
        _, shapes = jax.eval_shape(step, state, frozen, None, train_key)
        metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        body = lambda _, carry: step(carry[0], frozen, None, train_key)
        return jax.lax.fori_loop(0, length, body, (state, metrics))
      body = lambda st, b: step(st, frozen, b, train_key)
      state, metrics = jax.lax.scan(body, state, batches, length=n)
      return state, jax.tree.map(lambda m: m[-1], metrics)

    if self.num_seeds > 1:
      axes = (0, self._frozen_axes, 0 if self.host else None, 0)
      call = jax.vmap(call, in_axes=axes + ((None,) if n is None else ()))
    return call

  def _with_rules(self, call):
    """`call`, tracing under the models' activation constraints."""
    mesh, rules = self._mesh, self._rules

    def with_rules(*args):
      with sharding.activation_rules(mesh, rules):
        return call(*args)

    return with_rules

  def jitted(self, n: int | None):
    """The jitted call of `n` updates (`None`: any number, passed last); models'
    activation constraints apply while it traces."""
    with_rules = self._with_rules(self._calls(n))
    batch_sh = (self._batch_sharding1 if n == 1 else self._batch_sharding) if self.host else None
    length_sh = (sharding.replicated(self._mesh),) if n is None else ()
    return jax.jit(with_rules, donate_argnums=0,
                   in_shardings=(self._state_sharding, self._frozen_sharding, batch_sh, None)
                   + length_sh,
                   out_shardings=(self._state_sharding, sharding.replicated(self._mesh)))

  def compiled(self, n: int, state, frozen, batches, train_keys):
    """The executable that runs calls of `n` updates (compiled on first use, from the
    arguments' shapes; with `any_length`, the one executable of every `n`)."""
    key = None if self.any_length else n
    if key not in self._compiled:
      length = () if key is not None else (
          jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding.replicated(self._mesh)),)
      lowered = self.jitted(key).lower(state, frozen, batches, train_keys, *length)
      if self._accum > 1:  # For `update_flops`.
        self._flops_before[key] = flops_lib.compiled_flops(lowered)
      self._compiled[key] = lowered.compile()
    return self._compiled[key]

  def update_flops(self, n: int, state, frozen, batch_spec, train_keys) -> float:
    """FLOPs of one update per device (all replicas), from the compiled call of `n` updates.

    XLA's cost analysis counts a loop's body once: right for a call of n updates (one
    update), but an update of `grad_accum_steps` micro-batches reads as one micro-batch.
    That count is scaled by how much more the update without its accumulation loop does,
    both lowered and counted before optimisation (`batch_spec`: one update's host batch)."""
    key = None if self.any_length else n
    counted = flops_lib.compiled_flops(self._compiled[key])
    if self._accum == 1 or not counted:
      return counted
    call = self._with_rules(self._calls(1, self._whole_step()))
    whole = flops_lib.compiled_flops(jax.jit(call).lower(state, frozen, batch_spec, train_keys))
    return counted * whole / self._flops_before[key]

  def call(self, n: int, state, frozen, batches, train_keys, spec):
    """Runs `n` updates (`spec`: the batches' shapes, for a first compilation)."""
    executable = self.compiled(n, state, frozen, spec, train_keys)
    if not self.any_length:
      return executable(state, frozen, batches, train_keys)
    if n not in self._lengths:
      self._lengths[n] = sharding.put_replicated(np.int32(n), self._mesh)
    return executable(state, frozen, batches, train_keys, self._lengths[n])


def _call_length(step: int, t, num_steps: int, phase_ends) -> int:
  """Updates in the next call: up to steps_per_call, ending at the next step where
  the loop logs, evaluates, checkpoints, changes phase or stops."""
  stop = min(num_steps, step + t.steps_per_call)
  for every in (t.log_every, t.eval_every, t.checkpoint_every):
    stop = min(stop, (step // every + 1) * every)
  later = [p for p in phase_ends if p > step]
  return min([stop] + later) - step


# ----------------------------------------------------------------------------
# The host pipeline: grain over steps, each element a pure function of (seed, step).
# ----------------------------------------------------------------------------
class host_batches:
  """Batches of the host pipeline (None for the device pipeline).

  Each process asks the experiment for the rows its own devices hold and
  `jax.make_array_from_process_local_data` assembles the global array; no process
  ever builds another's rows. A grain dataset over step indices prefetches them in
  a background thread while the device trains; its iterator state goes into the
  checkpoint's metadata and is checked against the restored step on resume.
  """

  def __init__(self, exp, train_keys, mesh, rules, config, saved_state, start_step: int):
    self.active = exp.host_batch is not None
    self._state = {"next_index": start_step}
    if not self.active:
      return
    self._exp, self._keys, self._seeds = exp, train_keys, config.train.num_seeds
    self._sharding = sharding.batch_sharding(mesh, rules)
    self._global = config.train.batch_size
    self._start, self._stop = sharding.process_rows(self._sharding, self._global)
    ds = grain.MapDataset.range(config.train.num_steps).map(self._local_rows)
    self._it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)))
    if start_step:  # Resuming: the iterator continues where the checkpoint left it.
      # (Checkpoints written before the iterator state was saved hold none: every
      # element is a pure function of its step, so the step alone places it.)
      saved_state = saved_state or {"next_index": start_step}
      if saved_state.get("next_index") != start_step:
        raise ConfigError(f"the checkpoint at step {start_step} holds data-iterator state "
                          f"{saved_state}, which does not continue at that step; the workdir "
                          f"is inconsistent: use a new --workdir")
      self._it.set_state(dict(saved_state))
    self._pending: dict[int, Any] = {}

  def _local_rows(self, step: int):
    rows = lambda k: self._exp.host_batch(batch_key(k, step), self._start, self._stop, step)
    if self._seeds == 1:
      return rows(self._keys)
    return jax.tree.map(lambda *xs: np.stack(xs), *[rows(k) for k in self._keys])

  def _global_array(self, local, lead: int):
    def put(x):
      shape = (*x.shape[:lead], self._global, *x.shape[lead + 1:])
      return jax.make_array_from_process_local_data(
          sharding.with_leading_axis(self._sharding, lead), x, shape)
    return jax.tree.map(put, local)

  def _next_local(self, step: int):
    if step not in self._pending:
      local = next(self._it)
      self._state = self._it.get_state()
      self._pending[step] = local
    return self._pending.pop(step)

  def spec(self, step: int, n: int):
    """Shapes and shardings of `take(step, n)`, for compiling (nothing consumed)."""
    if not self.active:
      return None
    if not hasattr(self, "_row_spec"):
      self._row_spec = jax.tree.map(lambda x: (x.shape, x.dtype), self._local_rows(step))
    lead = (0 if self._seeds == 1 else 1) + (n > 1)
    def struct(shape_dtype):
      shape, dtype = shape_dtype
      shape = (*shape[:lead - (n > 1)], *((n,) if n > 1 else ()), self._global,
               *shape[lead - (n > 1) + 1:])
      return jax.ShapeDtypeStruct(shape, dtype,
                                  sharding=sharding.with_leading_axis(self._sharding, lead))
    return jax.tree.map(struct, self._row_spec, is_leaf=lambda x: isinstance(x, tuple))

  def peek(self, step: int):
    """The global batch of `step` (not consumed from the prefetching iterator)."""
    if not self.active:
      return None
    return self._global_array(self._local_rows(step), 0 if self._seeds == 1 else 1)

  def take(self, step: int, n: int):
    """Global batches for steps [step, step + n) (stacked when n > 1)."""
    if not self.active:
      return None
    locals_ = [self._next_local(s) for s in range(step, step + n)]
    lead = 0 if self._seeds == 1 else 1
    if n == 1:
      return self._global_array(locals_[0], lead)
    stacked = jax.tree.map(lambda *xs: np.stack(xs, axis=lead), *locals_)
    return self._global_array(stacked, lead + 1)

  def state(self, step: int) -> dict:
    """The data position after `step` updates, saved with the checkpoint: the grain
    iterator's state (host pipeline), or the step itself (device pipeline)."""
    return dict(self._state) if self.active else {"next_index": step}

  def close(self):
    if self.active:
      self._pending.clear()


# ----------------------------------------------------------------------------
# Pieces for benchmarks and sharding tests.
# ----------------------------------------------------------------------------
def fresh_state_and_step(config, mesh):
  """(experiment, initial sharded state, jitted one-update step, inputs) for a config on a
  mesh: the trainer's own pieces, for benchmarks and sharding tests. Step i runs as
  `state, metrics = step(state, *inputs(i))`; `step.lower(state, *inputs(0))` compiles it."""
  rules = sharding.rules_from_config(config.sharding.rules)
  exp = build_experiment(config, mesh)
  tx = optim.make_optimizer(config)
  seeds = [config.seed + s for s in range(config.train.num_seeds)]
  init_keys, train_keys = replica_keys(seeds)
  state_sharding, init_fn = state_init(exp, tx, rules, mesh, len(seeds))
  state = initial_state(init_fn, state_sharding, init_keys)
  frozen = {} if exp.frozen is None else exp.frozen
  fns = StepFunctions(exp, tx, mesh, rules, state_sharding, config, frozen)
  batches = host_batches(exp, train_keys, mesh, rules, config, None, 0)
  return exp, state, fns.jitted(1), lambda i: (frozen, batches.peek(i), train_keys)


# ----------------------------------------------------------------------------
# Small helpers: console output, progress bar, preemption, the matmul peak.
# ----------------------------------------------------------------------------
PEAK_MATMUL_N = 1536  # The square f32 matmul whose speed is the MFU's denominator.


@functools.cache
def _process_peak() -> float:
  """The f32 matmul peak, measured once per process (valid only in this process)."""
  return flops_lib.matmul_peak(n=PEAK_MATMUL_N, repeats=3)


def _say(text: str) -> None:
  if jax.process_index() == 0 and text:
    print(text, flush=True)


class _progress:
  """tqdm bar (process 0): step, loss, steps/s, ETA; eval summaries above it."""

  def __init__(self, start, total, enabled):
    self._bar = None
    if enabled:
      from tqdm.auto import tqdm
      self._bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
    self._pos = start

  def update(self, step, row):
    if self._bar is not None:
      self._bar.update(step - self._pos)
      self._pos = step
      self._bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}",
                            steps_s=f"{row['steps_per_s']:.2f}",
                            gflops_s=f"{row['flops_per_s'] / 1e9:.1f}")

  def write_eval(self, step, metrics, limit: int = 8):
    """The evaluation's scalar metrics, shortest names first (a run's headline numbers)."""
    if self._bar is not None:
      scalars = sorted((k for k, v in metrics.items() if isinstance(v, float)), key=len)
      self._bar.write(f"eval @ {step}: " + ", ".join(
          f"{k}={metrics[k]:.3f}" for k in scalars[:limit]))

  def close(self):
    if self._bar is not None:
      self._bar.close()


class _PreemptionFlag:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each call."""

  def __init__(self):
    self.requested, self.signum, self.signal_name = False, 0, ""
    self._old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. a notebook worker).
        pass

  def _handle(self, signum, frame):
    del frame
    self.requested, self.signum = True, signum
    self.signal_name = signal.Signals(signum).name

  def restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)
