"""Environment speed: the NumPy reference vs the jitted env, batched and single-step.

Prints, in one run:
  * steps/s of the plain-Python reference (one car),
  * car-steps/s of the jitted env for 1, 64, 1024 and 4096 cars (inside ``lax.scan``, auto-reset on,
    cars spread over 16 tracks, driven by a simple ray-following controller),
  * the latency of one jitted single-car step called from Python, and the ratios,
  * the Gymnasium env beside it: one ``RaceEnv.step``, a ``reset`` switching between two (cached)
    tracks, a reset on a track never built, and ``RaceVectorEnv.step`` for 64 cars; then the
    Gymnasium step again in a child process with JAX's default asynchronous dispatch.

Each figure is the best of several repeats (this machine is shared and noisy; the best repeat is
the closest to what the code can do). Run: ``python benchmarks/env_speed.py [--quick] [--json]``.

On a CPU, XLA runs one computation on one core, so the batched figures split the cars over one JAX
device per core (``--xla_force_host_platform_device_count``) and shard the car axis across them;
the env code is the same ``jax.vmap(env.step)``. Each car's rewards are summed in the scan carry,
so the devices never wait for each other inside a rollout. On a GPU the cars stay on the one device.
The single-step latency is measured with synchronous CPU dispatch (see below).
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
    )

import argparse
import json
import platform
import subprocess
import sys
import time

import jax

# A one-car step is a few microseconds of work; handing it to a dispatch thread (JAX's default on
# the CPU) costs about as much again. Loops that step one car from Python (carlab play, the
# Gymnasium env) are faster with synchronous dispatch, so the latency is measured that way. It must
# be set before JAX runs anything, and makes no difference to the batched figures.
# ``--async-dispatch`` (the child that measures the Gymnasium step as a default JAX setup runs it) keeps it.
if "--async-dispatch" not in sys.argv:
    jax.config.update("jax_cpu_enable_async_dispatch", False)

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from carlab.sim import env, reference
from carlab.sim.gym_env import RaceEnv
from carlab.sim.vector_env import RaceVectorEnv

NUM_TRACKS = 16


def controller(obs, xp=jnp):
    """Steer towards the side with more room, ease off the throttle when the front ray is short.

    ``xp`` is the array module: ``jnp`` inside jit, ``numpy`` for the plain-Python reference.
    """
    steering = xp.clip(4.0 * (obs[..., 3] + obs[..., 4] - obs[..., 0] - obs[..., 1]), -1.0, 1.0)
    throttle = xp.where(obs[..., 2] > 0.5, 0.6, -0.2)
    return xp.stack([steering, throttle], axis=-1)


def best_of(fn, repeats):
    """Smallest wall time of ``repeats`` calls of ``fn`` (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def batched_steps_per_second(params, num_cars, num_steps, repeats):
    """Car-steps/s of ``num_steps`` scanned steps of ``num_cars`` vmapped cars."""
    obs, state = env.reset_batch(jax.random.PRNGKey(0), params, num_cars)
    returns = jnp.zeros(num_cars)
    devices = jax.devices()
    if devices[0].platform == "cpu" and num_cars % len(devices) == 0:
        cars = NamedSharding(Mesh(np.array(devices), ("cars",)), PartitionSpec("cars"))
        obs, state, returns = jax.device_put((obs, state, returns), cars)
    vstep = jax.vmap(env.step, in_axes=(None, 0, 0, None))  # the env draws no randomness per car

    @jax.jit
    def rollout(obs, state, returns, key):
        # Each car's rewards are summed in the carry (so they are computed and kept) rather than
        # averaged over all cars each step, which would make the devices meet once a step.
        def body(carry, key):
            obs, state, returns = carry
            obs, state, reward, _, _, _ = vstep(key, state, controller(obs), params)
            return (obs, state, returns + reward), None

        return jax.lax.scan(body, (obs, state, returns), jax.random.split(key, num_steps))[0]

    jax.block_until_ready(rollout(obs, state, returns, jax.random.PRNGKey(1)))  # compile
    run = lambda: jax.block_until_ready(rollout(obs, state, returns, jax.random.PRNGKey(2)))
    seconds = best_of(run, repeats)
    return num_cars * num_steps / seconds


def single_step_latency_us(params, calls, repeats):
    """Microseconds per call of a jitted single-car ``step`` from Python (params closed over)."""
    _, state = env.reset(jax.random.PRNGKey(0), params, 0)
    key, action = jax.random.PRNGKey(0), jnp.array([0.0, 0.5])
    step = jax.jit(lambda key, state, action: env.step(key, state, action, params))
    jax.block_until_ready(step(key, state, action))

    def run():
        out = None
        for _ in range(calls):
            out = step(key, state, action)
        jax.block_until_ready(out)

    return best_of(run, repeats) / calls * 1e6


def gym_costs_us(calls, repeats):
    """Microseconds per Gymnasium call: step, reset switching track, reset on a new track, vector step."""
    race = RaceEnv(track_seed=0)
    race.reset(options={"track_seed": 1})
    action = np.array([0.0, 0.2], np.float32)  # slow enough to stay on the track for a while

    def steps():
        for _ in range(calls):
            _, _, terminated, truncated, _ = race.step(action)
            if terminated or truncated:
                race.reset()

    race.reset()
    steps()  # compile
    seeds = [0, 1]

    def switches():
        for i in range(calls):
            race.reset(options={"track_seed": seeds[i % 2]})

    fresh = iter(range(10_000, 10_000 + 100 * repeats))

    def new_tracks():
        for _ in range(10):
            race.reset(options={"track_seed": next(fresh)})

    cars = RaceVectorEnv(64, track_seed=range(64))
    cars.reset()
    actions = np.tile(action, (64, 1))
    cars.step(actions)  # compile

    def vector_steps():
        for _ in range(calls // 10):
            cars.step(actions)

    return {
        "gym_step_us": best_of(steps, repeats) / calls * 1e6,
        "gym_reset_switch_track_us": best_of(switches, repeats) / calls * 1e6,
        "gym_reset_new_track_us": best_of(new_tracks, repeats) / 10 * 1e6,
        "gym_vector_64_cars_step_us": best_of(vector_steps, repeats) / (calls // 10) * 1e6,
    }


def async_gym_step_us(quick):
    """The Gymnasium step measured in a child process that keeps JAX's asynchronous CPU dispatch."""
    argv = [sys.executable, __file__, "--gym-only", "--async-dispatch", "--json"] + (
        ["--quick"] if quick else []
    )
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["gym_step_us"]


def reference_steps_per_second(params, num_steps):
    """Steps/s of the plain-Python reference for one car on track 0."""
    track = jax.tree.map(lambda a: np.asarray(a[0]), params.tracks)
    car = reference.start_car(track)
    obs = reference.observe(track, car, params)
    start = time.perf_counter()
    for _ in range(num_steps):
        action = controller(np.asarray(obs), xp=np)
        car, obs, _, terminated, truncated = reference.step(track, car, action, params)
        if terminated or truncated:
            car = reference.start_car(track)
    return num_steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--gym-only", action="store_true", help="only the Gymnasium figures")
    parser.add_argument("--async-dispatch", action="store_true", help="keep JAX's asynchronous dispatch")
    args = parser.parse_args(argv)
    steps, repeats = (50, 2) if args.quick else (500, 5)
    calls = 500 if args.quick else 5000
    if args.gym_only:
        print(json.dumps(gym_costs_us(calls, repeats)))
        return None

    params = env.EnvParams.from_seeds(NUM_TRACKS)
    results = {
        "device": f"{len(jax.devices())} x {jax.devices()[0].device_kind}",
        "cpu": platform.processor() or platform.machine(),
        "reference_steps_per_s": reference_steps_per_second(params, 100 if args.quick else 500),
    }
    for n in (1, 64, 1024, 4096):
        results[f"jit_{n}_cars_steps_per_s"] = batched_steps_per_second(params, n, steps, repeats)
    results["single_step_latency_us"] = single_step_latency_us(params, calls, repeats)
    results.update(gym_costs_us(calls, repeats))
    results["gym_step_vs_core_step"] = results["gym_step_us"] / results["single_step_latency_us"]
    results["gym_step_async_dispatch_us"] = async_gym_step_us(args.quick)
    best = max(v for k, v in results.items() if k.startswith("jit_"))
    results["speedup_best_batch_vs_reference"] = best / results["reference_steps_per_s"]
    results["speedup_best_batch_vs_1_car"] = best / results["jit_1_cars_steps_per_s"]

    if args.json:
        print(json.dumps(results))
        return results
    print(f"carlab env speed on {results['device']} ({results['cpu']}), best of {repeats} repeats")
    print(f"  reference (NumPy, 1 car):     {results['reference_steps_per_s']:>14,.0f} steps/s")
    for n in (1, 64, 1024, 4096):
        print(f"  jitted, {n:>4} cars (lax.scan): {results[f'jit_{n}_cars_steps_per_s']:>14,.0f} car-steps/s")
    print(f"  one jitted step from Python:  {results['single_step_latency_us']:>14.1f} us")
    print(
        f"  Gymnasium RaceEnv.step:       {results['gym_step_us']:>14.1f} us"
        f"  ({results['gym_step_vs_core_step']:.2f} x the core step)"
    )
    print(f"  reset, switching track:       {results['gym_reset_switch_track_us']:>14.1f} us (cached)")
    print(f"  reset on a new track:         {results['gym_reset_new_track_us']:>14.1f} us (built)")
    print(f"  RaceVectorEnv.step, 64 cars:  {results['gym_vector_64_cars_step_us']:>14.1f} us")
    print(f"  RaceEnv.step, async dispatch: {results['gym_step_async_dispatch_us']:>14.1f} us")
    print(f"  best batch / reference:       {results['speedup_best_batch_vs_reference']:>14,.0f} x")
    print(f"  best batch / 1 car:           {results['speedup_best_batch_vs_1_car']:>14,.0f} x")
    return results


if __name__ == "__main__":
    main()
