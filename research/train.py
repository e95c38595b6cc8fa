"""The one trainer: `train_and_evaluate(config, workdir) -> final metrics`.

Reads top to bottom: config and workdir checks, mesh, experiment (data, model,
loss — the paper-specific part, see `research/experiment.py`), optimizer, sharded
state from `jax.eval_shape`, restore-or-init, a jitted and donated train step,
the loop (logging, evaluation, checkpoints, preemption), the final report.

Every batch is a pure function of (config.seed, step), the state holds the step,
and the checkpoint holds the state: stopping and resuming gives bit-identical
parameters on CPU. Batches are sampled inside the step (device pipeline) or built
by each process from its own rows (host pipeline, `jax.make_array_from_process_local_data`);
see `research/experiment.py`.
"""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from research import checkpoint
from research import config as config_lib
from research import experiment as experiment_lib
from research import flops as flops_lib
from research import metrics as metrics_lib
from research import optim
from research import sharding

FINAL_METRICS = "final_metrics.json"


class NonFiniteError(RuntimeError):
  pass


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  # --------------------------------------------------------------------------
  # Config and workdir: everything that can be checked is checked before compiling.
  # --------------------------------------------------------------------------
  config_lib.check_common(config)
  config_lib.check_workdir(workdir)
  is_main = jax.process_index() == 0
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path):
    with open(config_path) as f:
      config_lib.check_resume_compatible(f.read(), config)

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
  exp = experiment_lib.build(config, mesh)
  tx = optim.make_optimizer(config)
  frozen = {} if exp.frozen is None else exp.frozen  # Step inputs that never train.

  # --------------------------------------------------------------------------
  # Train state: shapes and shardings from eval_shape, so no host ever holds a
  # full replicated copy; then restore the latest checkpoint or initialise.
  # --------------------------------------------------------------------------
  root_key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(root_key)
  host_rows = host_batch_fn(exp, train_key, mesh, rules, config.train.batch_size)

  init_state = new_state_fn(exp, tx)

  abstract_boxed = jax.eval_shape(init_state, init_key)
  state_sharding = sharding.tree_shardings(abstract_boxed, rules, mesh)
  abstract = checkpoint.abstract_like(nn.unbox(abstract_boxed), state_sharding)

  if is_main:
    with open(config_path, "w") as f:
      f.write(config_lib.to_json(config))
  mngr = checkpoint.manager(workdir, max_to_keep=config.train.keep_checkpoints)
  state, meta = checkpoint.restore_latest(mngr, abstract)
  final_path = os.path.join(workdir, FINAL_METRICS)
  if state is None:
    state = jax.jit(lambda k: nn.unbox(init_state(k)), out_shardings=state_sharding)(init_key)
  else:
    _say(f"resuming from step {meta['step']} in {workdir}")
    if meta["step"] >= config.train.num_steps and os.path.exists(final_path):
      _say(f"run in {workdir} is already finished at step {meta['step']}; "
           f"raise --config.train.num_steps to train further")
      with open(final_path) as f:
        return json.load(f)
  start_step = int(sharding.to_host(state["step"]))

  # --------------------------------------------------------------------------
  # Train step: jitted with explicit shardings, state donated.
  # --------------------------------------------------------------------------
  step_fn = jit_train_step(exp, tx, train_key, mesh, rules, state_sharding,
                           config.train.grad_accum_steps)
  compiled = step_fn.lower(state, frozen, host_rows(start_step)).compile()
  flops_per_step = flops_lib.compiled_flops(compiled)
  peak = config.peak_flops or flops_lib.matmul_peak(n=1536, repeats=3)
  info = dict(exp.info, flops_per_step=flops_per_step, peak_flops_per_device=peak,
              devices=jax.device_count(), processes=jax.process_count(), mesh=dict(mesh.shape),
              **flops_lib.machine_info())
  _say(f"{config.task}: " + ", ".join(f"{k}={v}" for k, v in info.items()))

  # --------------------------------------------------------------------------
  # Loop: log, evaluate, checkpoint; SIGTERM/SIGINT save and stop cleanly.
  # --------------------------------------------------------------------------
  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.train.tensorboard)
  writer.write(start_step, info, kind="info")
  stop = _PreemptionFlag()
  num_steps = config.train.num_steps
  bar = _progress(start_step, num_steps, enabled=is_main and config.train.progress)
  last_eval: dict[str, Any] = {}
  t_last, step_last = time.perf_counter(), start_step

  saved = {start_step}

  def save(step, force=False):
    if step not in saved:  # A preemption may land right after a periodic save.
      if checkpoint.save(mngr, step, state, {"step": step, "seed": config.seed}, force=force):
        saved.add(step)

  try:
    for step in range(start_step + 1, num_steps + 1):
      state, train_metrics = compiled(state, frozen, host_rows(step - 1))
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
        m = sharding.to_host(train_metrics)
        now = time.perf_counter()
        steps_per_s = (step - step_last) / max(now - t_last, 1e-9)
        t_last, step_last = now, step
        row = {k: float(v) for k, v in m.items()}
        row.update(steps_per_s=steps_per_s, flops_per_step=flops_per_step,
                   flops_per_s=flops_per_step * steps_per_s,
                   mfu=flops_per_step * steps_per_s / peak if peak else 0.0,
                   nonfinite_total=int(sharding.to_host(state["nonfinite_total"])))
        writer.write(step, row, kind="train")
        bar.update(step, row)
        run = int(sharding.to_host(state["nonfinite_run"]))
        if run and (config.train.on_nonfinite == "halt" or run >= config.train.max_nonfinite_steps):
          save(step, force=True)
          raise NonFiniteError(
              f"{run} consecutive steps up to step {step} had a non-finite loss or gradient "
              f"(updates were skipped; the last good state is saved in {workdir}). Lower the "
              f"learning rate, enable optimizer.grad_clip, or check the data")
      if step % config.train.eval_every == 0 or is_last:
        last_eval = exp.evaluate(state["params"], step)
        writer.write(step, last_eval, kind="eval")
        bar.write_eval(step, last_eval)
      if step % config.train.checkpoint_every == 0 or is_last:
        save(step, force=is_last)
      if stop.requested:
        save(step, force=True)
        mngr.wait_until_finished()
        _say(f"stopped by {stop.signal_name} at step {step}; checkpoint saved. Run the same "
             f"command to resume.")
        raise SystemExit(128 + stop.signum)
  finally:
    stop.restore()
    bar.close()
    mngr.wait_until_finished()
    writer.close()

  # --------------------------------------------------------------------------
  # Final report: a table on stdout, figures and final_metrics.json in the workdir.
  # --------------------------------------------------------------------------
  if not last_eval:  # Resumed exactly at the end: evaluate the restored state.
    last_eval = exp.evaluate(state["params"], num_steps)
  final = {"step": num_steps, **last_eval}
  if exp.report is not None:
    _say(exp.report(state["params"], workdir, final))
  if is_main:
    tmp = final_path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(final, f)
    os.replace(tmp, final_path)
  mngr.close()
  return final


def new_state_fn(exp: experiment_lib.Experiment, tx):
  """key -> train state (params boxed with logical axes; unbox after eval_shape)."""
  def init_state(key):
    params = exp.init_params(key)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "nonfinite_total": jnp.zeros((), jnp.int32),
            "nonfinite_run": jnp.zeros((), jnp.int32)}
  return init_state


def jit_train_step(exp, tx, train_key, mesh, rules, state_sharding, accum: int = 1):
  """`step(state, frozen, batch) -> (state, metrics)` jitted with explicit shardings
  and the state donated; `batch` is None for the device pipeline. `frozen` keeps the
  shardings it was placed with."""
  batch_sharding = sharding.batch_sharding(mesh, rules)
  step = make_train_step(exp, tx, train_key, batch_sharding, accum)
  frozen_sharding = jax.tree.map(lambda x: x.sharding, exp.frozen or {})
  host = exp.host_batch is not None
  return jax.jit(step, in_shardings=(state_sharding, frozen_sharding,
                                     batch_sharding if host else None),
                 out_shardings=(state_sharding, sharding.replicated(mesh)), donate_argnums=0)


def batch_key(train_key, step):
  """The key a batch is sampled from, at state step `step` (both pipelines)."""
  return jax.random.split(jax.random.fold_in(train_key, step))[0]


def host_batch_fn(exp, train_key, mesh, rules, global_batch: int):
  """step -> the global batch of the host pipeline (None for the device pipeline).

  Each process asks the experiment for the rows its own devices hold and
  `jax.make_array_from_process_local_data` assembles the global array; no process
  ever builds another's rows.
  """
  if exp.host_batch is None:
    return lambda step: None
  batch_sharding = sharding.batch_sharding(mesh, rules)
  start, stop = sharding.process_rows(batch_sharding, global_batch)

  def rows(step):
    local = exp.host_batch(batch_key(train_key, step), start, stop, step)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            batch_sharding, x, (global_batch, *x.shape[1:])), local)
  return rows


def fresh_state_and_step(config, mesh):
  """(experiment, initial sharded state, jitted step, inputs) for a config on a mesh:
  the trainer's own pieces, for benchmarks and sharding tests. Step i runs as
  `state, metrics = step(state, *inputs(i))`."""
  rules = sharding.rules_from_config(config.sharding.rules)
  exp = experiment_lib.build(config, mesh)
  tx = optim.make_optimizer(config)
  init_key, train_key = jax.random.split(jax.random.key(config.seed))
  init_state = new_state_fn(exp, tx)
  state_sharding = sharding.tree_shardings(jax.eval_shape(init_state, init_key), rules, mesh)
  state = jax.jit(lambda k: nn.unbox(init_state(k)), out_shardings=state_sharding)(init_key)
  step = jit_train_step(exp, tx, train_key, mesh, rules, state_sharding,
                        config.train.grad_accum_steps)
  rows = host_batch_fn(exp, train_key, mesh, rules, config.train.batch_size)
  frozen = {} if exp.frozen is None else exp.frozen
  return exp, state, step, lambda i: (frozen, rows(i))


def make_train_step(exp: experiment_lib.Experiment, tx, train_key, batch_sharding, accum: int = 1):
  """The train step as a pure function of the state (jit it with shardings).

  The batch is sampled inside the step from `batch_key(train_key, step)`, or
  arrives as an argument built from that key (host pipeline). A step whose
  loss or gradient is not finite leaves params and optimizer state unchanged and
  is counted in the state.
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

  def train_step(state, frozen, batch=None):
    key = jax.random.fold_in(train_key, state["step"])
    grads, metrics = grads_of(state["params"], frozen, batch, key, state["step"])
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    # A non-finite loss or gradient leaves params and optimizer state untouched.
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    bad = (~finite).astype(jnp.int32)
    new_state = {"step": state["step"] + 1, "params": keep(params, state["params"]),
                 "opt_state": keep(opt_state, state["opt_state"]),
                 "nonfinite_total": state["nonfinite_total"] + bad,
                 "nonfinite_run": (state["nonfinite_run"] + bad) * bad}
    metrics = dict(metrics, grad_norm=grad_norm, nonfinite=bad)
    return new_state, metrics

  return train_step


# ----------------------------------------------------------------------------
# Small helpers: console output, progress bar, preemption.
# ----------------------------------------------------------------------------
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

  def write_eval(self, step, metrics):
    if self._bar is not None:
      short = {k: round(v, 3) for k, v in metrics.items()
               if isinstance(v, float) and k.endswith("acc_last")}
      self._bar.write(f"eval @ {step}: {short}")

  def close(self):
    if self._bar is not None:
      self._bar.close()


class _PreemptionFlag:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

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
