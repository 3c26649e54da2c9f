"""``python -m benchmarks.evaluate RUN``: load a run's saved model, evaluate it on fresh seeds, record a video.

``RUN`` is a run's JSON (``runs/quick/runs/SAC__toy-reach-v0__seed0.json``), its model folder
(``runs/quick/models/SAC__toy-reach-v0__seed0``) or the ``model.zip`` in it. The model is
loaded with its algorithm's class, and with its ``VecNormalize`` statistics where it
normalised its observations. Examples::

    python -m benchmarks.evaluate runs/quick/runs/SAC__toy-reach-v0__seed0.json
    python -m benchmarks.evaluate runs/adhoc/models/SAC__Hopper-v5__seed0 --episodes 20 --video videos/
    MUJOCO_GL=egl python -m benchmarks.evaluate runs/mujoco-cpu/runs/PPO__Hopper-v5__seed0.json --video videos/

The evaluation seeds start at ``--seed`` (default 1000000), far from the seeds used in
training and in the run's own evaluations. A video (``--video DIR``) is gymnasium's
``RecordVideo`` of the first ``--video-episodes`` episodes; MuJoCo tasks render off-screen
with ``MUJOCO_GL=egl`` (or ``osmesa``). Exit status 2 for bad input, with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import algorithms

#: first evaluation seed: disjoint from the training seeds and from the runs' evaluation seeds
FRESH_SEED = 1_000_000


class EvaluateError(ValueError):
    """A run that cannot be evaluated; the message names the fix."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run's JSON, its model folder or its model.zip")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default: 10)")
    parser.add_argument("--seed", type=int, default=FRESH_SEED, help=f"seed of the first episode (default: {FRESH_SEED})")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic policy")
    parser.add_argument("--video", type=Path, metavar="DIR", help="record the first episodes as mp4 in DIR")
    parser.add_argument("--video-episodes", type=int, default=1, help="episodes recorded with --video (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device of the loaded model (default: cpu)")
    return parser.parse_args(argv)


def locate(run: Path) -> tuple[dict[str, Any], Path]:
    """The record of a run and the path of its model, from any of the run's JSON, model folder or model zip.

    :param run: the path given on the command line
    :return: ``(record, model.zip)``
    """
    if run.suffix == ".json":
        record_path = run
    else:
        folder = run.parent if run.suffix == ".zip" else run
        record_path = folder.parent.parent / "runs" / f"{folder.name}.json"
    if not record_path.is_file():
        raise EvaluateError(f"{run}: no run record {record_path}; give a run's JSON, e.g. runs/quick/runs/<run>.json")
    record = json.loads(record_path.read_text())
    if record.get("status") != "ok":
        raise EvaluateError(f"{record_path}: the run did not finish (status {record.get('status')!r}): it has no model")
    model_path = record_path.parent.parent / record.get("model", f"models/{record_path.stem}/model.zip")
    if not model_path.is_file():
        raise EvaluateError(
            f"{record_path}: its model {model_path} is missing (runs finished before models were kept have none); "
            "rerun it with python -m benchmarks.run"
        )
    return record, model_path


def load_run(record: dict[str, Any], model_path: Path, device: str = "cpu", render_mode: str | None = None) -> tuple[Any, Any]:
    """Load a run's model and build its evaluation env (``VecNormalize`` with the saved statistics where it has them).

    :param record: the run's record (its ``algo`` and ``env``)
    :param model_path: the ``model.zip``
    :param device: torch device of the model
    :param render_mode: the env's render mode (``"rgb_array"`` for a video)
    :return: ``(model, env)``
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from rlkit.envs import make_env

    if record["algo"] not in algorithms.ALGORITHMS:
        raise EvaluateError(f"algorithm {record['algo']!r} of the run is not registered in benchmarks/algorithms.py")
    model = algorithms.get(record["algo"]).load().load(model_path, device=device)
    kwargs = {"render_mode": render_mode} if render_mode else {}
    stats = model_path.parent / "vecnormalize.pkl"
    if not stats.is_file():
        return model, make_env(record["env"], **kwargs)
    env = VecNormalize.load(str(stats), DummyVecEnv([lambda: make_env(record["env"], **kwargs)]))
    env.training, env.norm_reward = False, False
    return model, env


def record_video(env: Any, folder: Path, name: str, episodes: int) -> Any:
    """Wrap ``env`` (a gymnasium env) in ``RecordVideo`` for its first ``episodes`` episodes.

    :param env: the env, made with ``render_mode="rgb_array"``
    :param folder: where the mp4 files go
    :param name: their name prefix
    :param episodes: how many episodes to record
    """
    from gymnasium.wrappers import RecordVideo

    if env.render_mode != "rgb_array" or env.metadata.get("render_modes") is None:
        raise EvaluateError(f"{env.spec.id if env.spec else env} cannot render frames (rgb_array): no video")
    return RecordVideo(
        env, str(folder), episode_trigger=lambda episode: episode < episodes, name_prefix=name, disable_logger=True
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.episodes < 1 or args.video_episodes < 1:
            raise EvaluateError("--episodes and --video-episodes must be at least 1")
        record, model_path = locate(args.run)
        model, env = load_run(record, model_path, args.device, "rgb_array" if args.video else None)
        if args.video:
            if not hasattr(env, "render_mode"):  # a VecNormalize: record the env inside it
                env.venv.envs[0] = record_video(env.venv.envs[0], args.video, model_path.parent.name, args.video_episodes)
            else:
                env = record_video(env, args.video, model_path.parent.name, args.video_episodes)
    except (EvaluateError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from rlkit.common.evaluation import evaluate_model

    result = evaluate_model(model, env, n_episodes=args.episodes, deterministic=not args.stochastic, seed=args.seed)
    env.close()
    score = f", normalised score {result['normalized_score']:.1f}" if "normalized_score" in result else ""
    print(
        f"{model_path.parent.name}: return {result['return_mean']:.2f} ± {result['return_std']:.2f} over {args.episodes} "
        f"episodes (seeds {args.seed}-{args.seed + args.episodes - 1}){score}; "
        f"in the run: {record['final']['return_mean']:.2f}"
    )
    if args.video:
        print(f"video: {', '.join(sorted(str(p) for p in args.video.glob(f'{model_path.parent.name}*.mp4')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
