"""Writes golden trajectories of Gymnasium's CartPole-v1 and Pendulum-v1 for the Rust
environments' tests. Run once (pip install gymnasium): python3 examples/goldens/make_goldens.py

Each episode records the environment's internal float64 state right after a seeded reset (so
the Rust side starts from the identical state), then for every step the exact internal state
before it, the action, and the observation, reward, terminated and truncated flags that
followed, through Gymnasium's own TimeLimit."""

import json
import pathlib
import random

import gymnasium
import numpy as np

HERE = pathlib.Path(__file__).parent


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
            obs, reward, terminated, truncated, _ = env.step(action)
            steps.append({
                "state": before,
                "action": action,
                "obs": [float(v) for v in obs],
                "reward": float(reward),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
            })
            if terminated or truncated:
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
            obs, reward, terminated, truncated, _ = env.step(np.array([action], dtype=np.float32))
            steps.append({
                "state": before,
                "action": action,
                "obs": [float(v) for v in obs],
                "reward": float(reward),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
            })
            if terminated or truncated:
                break
        episodes.append({"seed": seed, "state0": state0, "steps": steps})
    return {"env": "Pendulum-v1", "gymnasium": gymnasium.__version__, "episodes": episodes}


if __name__ == "__main__":
    for name, make in [("cartpole", cartpole), ("pendulum", pendulum)]:
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(make(), indent=0))
        print(f"wrote {path}")
