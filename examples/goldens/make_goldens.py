"""Writes golden trajectories of Gymnasium's CartPole-v1 and Pendulum-v1 for the Rust
environments' tests. Run once (pip install gymnasium): python3 examples/goldens/make_goldens.py

Each episode records the environment's internal float64 state right after a seeded reset (so
the Rust side starts from the identical state), then for every step the exact internal state
before it, the action, and the observation, reward, terminated and truncated flags that
followed, through Gymnasium's own TimeLimit.

With --mujoco it writes Hopper-v5 and Humanoid-v5 instead (pip install mujoco==3.17.0
gymnasium==1.4.0), for the examples' optional `mujoco` feature."""

import json
import pathlib
import random

import gymnasium
import numpy as np

HERE = pathlib.Path(__file__).parent


def record(env, env_action, action, state=None):
    """Steps `env` with `env_action` and returns the step's record (`action` as logged)."""
    obs, reward, terminated, truncated, _ = env.step(env_action)
    step = {} if state is None else {"state": state}
    step.update({
        "action": action,
        "obs": [float(v) for v in obs],
        "reward": float(reward),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
    })
    return step


def cartpole():
    episodes = []
    for seed, policy in [(0, "random"), (1, "random"), (2, "balance"), (3, "balance")]:
        env = gymnasium.make("CartPole-v1")
        env.reset(seed=seed)
        state0 = [float(v) for v in env.unwrapped.state]
        rng = random.Random(seed)
        steps = []
        while True:
            before = [float(v) for v in env.unwrapped.state]
            x, x_dot, theta, theta_dot = env.unwrapped.state
            if policy == "random":
                action = rng.randrange(2)
            else:  # a simple controller that keeps the pole up until the time limit
                action = 1 if theta + 0.5 * theta_dot + 0.01 * x + 0.05 * x_dot > 0 else 0
            step = record(env, action, action, before)
            steps.append(step)
            if step["terminated"] or step["truncated"]:
                break
        episodes.append({"seed": seed, "policy": policy, "state0": state0, "steps": steps})
    return {"env": "CartPole-v1", "gymnasium": gymnasium.__version__, "episodes": episodes}


def pendulum():
    episodes = []
    for seed in [0, 1, 2]:
        env = gymnasium.make("Pendulum-v1")
        env.reset(seed=seed)
        state0 = [float(v) for v in env.unwrapped.state]
        rng = random.Random(seed)
        steps = []
        while True:
            before = [float(v) for v in env.unwrapped.state]
            # Torques across the whole range, some beyond it (the env clips them).
            action = round(rng.uniform(-2.5, 2.5), 3)
            step = record(env, np.array([action], dtype=np.float32), action, before)
            steps.append(step)
            if step["terminated"] or step["truncated"]:
                break
        episodes.append({"seed": seed, "state0": state0, "steps": steps})
    return {"env": "Pendulum-v1", "gymnasium": gymnasium.__version__, "episodes": episodes}


def mujoco_env(env_id, seeds, max_steps):
    """Free-running episodes of a MuJoCo environment from its seeded reset: the exact qpos
    and qvel after the reset, then per step the action (some beyond the control range, which
    MuJoCo clamps while the control cost counts them) and what followed. Needs
    `pip install mujoco==3.17.0` (the version mujoco-rs binds)."""
    import mujoco

    episodes = []
    for seed, policy in seeds:
        env = gymnasium.make(env_id)
        env.reset(seed=seed)
        data = env.unwrapped.data
        qpos0 = [float(v) for v in data.qpos]
        qvel0 = [float(v) for v in data.qvel]
        low, high = env.action_space.low, env.action_space.high
        rng = random.Random(seed)
        steps = []
        for _ in range(max_steps):
            if policy == "random":
                action = [round(rng.uniform(1.2 * float(lo), 1.2 * float(hi)), 4)
                          for lo, hi in zip(low, high)]
            else:
                action = [0.0] * len(low)
            step = record(env, np.array(action), action)
            steps.append(step)
            if step["terminated"] or step["truncated"]:
                break
        episodes.append({"seed": seed, "policy": policy, "qpos0": qpos0, "qvel0": qvel0,
                         "steps": steps})
    return {"env": env_id, "gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__,
            "episodes": episodes}


def hopper():
    return mujoco_env("Hopper-v5", [(0, "random"), (1, "random"), (2, "zero")], 300)


def humanoid():
    return mujoco_env("Humanoid-v5", [(0, "random"), (1, "zero")], 60)


if __name__ == "__main__":
    import sys

    makers = [("cartpole", cartpole), ("pendulum", pendulum)]
    if "--mujoco" in sys.argv:
        makers = [("hopper", hopper), ("humanoid", humanoid)]
    for name, make in makers:
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(make(), indent=0))
        print(f"wrote {path}")
