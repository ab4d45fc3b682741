"""Does goal relabelling make stage 1 learn faster where grasps often take a neighbour? (issue 6)

The paper's claim (section IV-B, Fig. 5): goal-conditioned grasping learns faster when a grasp
that took another object than the goal is stored again as a success for that object. In
`make reproduce`'s stage 1 (random 5-object scenes, the depth heuristic exploring inside the goal
mask) only 2-3 % of the grasps take another object, so the two arms differ by about 15 samples
in 600 and their gap was seed noise (README, "Relabelling ablation"). This bench trains the same
stage 1 in crowded-goal scenes (`--train_scene crowded_goal`: the goal drops first and the others
land packed around it, as stages 2 and 3 train), where a grasp inside the goal mask takes a
neighbour far more often, with and without `--no_goal_relabelling`, on the same seeds.

Each arm is `main.py`'s stage 1 with `make reproduce`'s settings (tiny16ctx, replay, the depth
heuristic exploring) plus the crowded scenes; the two arms of a seed run side by side, one torch
thread each. Then every arm's numbered snapshots (one per `--eval_every` iterations) are tested on
the same held-out crowded scenes (seeded apart from training; each snapshot sees each scene
rebuilt from its seed): the net's best goal-masked grasp, one per scene, as the test policy picks
it. Those curves compare the arms on equal scenes, which the training logs cannot (each arm's
scenes drift apart once its grasps differ). The training logs give the rest: how many grasps took
a neighbour (what relabelling stores again) and the greedy goal grasp success over the last 100;
and at those grasps, each arm's last snapshot gives the Q of the grasp for the goal and for the
object it took (does the goal input tell them apart?).

Killed and run again, it resumes the unfinished arms (`main.py --continue_logging`) and keeps the
held-out results already measured (RUN_DIR/held-out.json). It prints one line per snapshot and a
JSON summary (bench/results/relabelling-<date>.json), and draws RUN_DIR/curves-relabelling.png.
Run: `python bench/relabelling.py [--run_dir ~/relabelling-crowded] [--seeds 1 2]
[--iterations 600] [--eval_every 100] [--eval_scenes 40]`.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# torch before any MuJoCo renderer: importing it after an EGL context exists segfaults (main.py).
import torch  # noqa: E402,F401
import numpy as np  # noqa: E402

ARMS = ("relabel", "norelabel")
GOAL_INDEX = 4  # make reproduce's training goal (the paper's k)
NUM_OBJECTS = 5  # stage 1's scenes (the paper's command line)
HELD_OUT_SEED = 987  # held-out scenes: a seed no training arm uses


def arm_argv(arm: str, seed: int, iterations: int, session: Path, scene: str) -> list[str]:
    """main.py's command line for one arm: make reproduce's stage 1 (reproduce.build_steps), in `scene` scenes."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}")
    argv = ["--stage", "grasp_only", "--num_obj", str(NUM_OBJECTS), "--grasp_goal_conditioned", "--goal_conditioned",
            "--goal_obj_idx", str(GOAL_INDEX), "--backbone", "tiny16ctx", "--cpu", "--experience_replay",
            "--explore_rate_decay", "--learning_rate", "0.0001", "--replay_candidates", "other_reward",
            "--replay_steps", "4", "--grasp_explore", "--grasp_explore_policy", "heuristic",
            "--random_seed", str(seed), "--max_iterations", str(iterations), "--train_scene", scene,
            "--logging_directory", str(session)]
    if arm == "norelabel":
        argv.append("--no_goal_relabelling")
    return argv


def iterations_done(session: Path) -> int:
    """Rows of the session's executed-action log: iterations finished (0 before the first)."""
    log = session / "transitions" / "executed-action.log.txt"
    if not log.is_file():
        return 0
    with open(log) as f:
        return sum(1 for line in f if line.strip())


def train_arms(run_dir: Path, seeds: list[int], iterations: int, scene: str, jobs: int) -> None:
    """Run (or resume) every unfinished arm, `jobs` at a time, each with one torch thread when
    several share the cores (two torch processes with all threads each slow down 3-5x, README)."""
    pending = [(arm, seed) for seed in seeds for arm in ARMS
               if iterations_done(run_dir / f"{arm}-seed{seed}") < iterations]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    if jobs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running: list[tuple[subprocess.Popen, str]] = []
    while pending or running:
        while pending and len(running) < jobs:
            arm, seed = pending.pop(0)
            session = run_dir / f"{arm}-seed{seed}"
            argv = [sys.executable, str(ROOT / "main.py"), *arm_argv(arm, seed, iterations, session, scene)]
            if (session / "transitions").is_dir():
                argv.append("--continue_logging")
            out = open(run_dir / f"{arm}-seed{seed}.out", "a")
            print(f"training {arm}, seed {seed}: from iteration {iterations_done(session)}", flush=True)
            running.append((subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT),
                            f"{arm}-seed{seed}"))
            out.close()
        time.sleep(5)
        for proc, name in list(running):
            if proc.poll() is not None:
                running.remove((proc, name))
                if proc.returncode != 0:
                    raise SystemExit(f"error: {name} stopped with exit code {proc.returncode} "
                                     f"(see {run_dir / (name + '.out')})")
                print(f"{name}: done ({iterations_done(run_dir / name)} iterations)", flush=True)


def snapshots_of(session: Path, every: int) -> dict[int, Path]:
    """The session's numbered stage-1 snapshots at multiples of `every`, by iteration."""
    found = {}
    for p in (session / "models").glob("snapshot-*.grasp_only.pth"):
        number = p.name[len("snapshot-"):-len(".grasp_only.pth")]
        if number.isdigit() and int(number) % every == 0:
            found[int(number)] = p
    return dict(sorted(found.items()))


def held_out_grasps(snapshots: dict[str, Path], scenes: int, seed: int) -> dict[str, list[dict]]:
    """Each snapshot's best goal-masked grasp on each held-out crowded scene (the scene rebuilt from
    its own seed for every snapshot; the physics is deterministic), and a digest of the scene's
    depth heightmap so that equal scenes can be checked."""
    from main import observe
    from robot import Robot
    from rules import best_pixel
    from simulation.mujoco_sim import MujocoSim
    from trainer import trainer_for_snapshot

    results: dict[str, list[dict]] = {name: [] for name in snapshots}
    sim = MujocoSim(num_obj=NUM_OBJECTS, rng=np.random.default_rng(seed))
    robot = Robot(sim)
    try:
        for name, path in snapshots.items():
            trainer = trainer_for_snapshot(path)
            for k in range(scenes):
                robot.reset_scene(np.random.default_rng([seed, k]), cluster_around=GOAL_INDEX)
                obs = observe(robot, GOAL_INDEX)
                digest = hashlib.sha1(np.round(obs.depth_heightmap, 4).tobytes()).hexdigest()[:12]
                if obs.goal_mask is None or not obs.goal_mask.any():
                    results[name].append({"scene": k, "goal_taken": None, "digest": digest})
                    continue
                _, grasp_q = trainer.forward(obs.color_heightmap, obs.depth_heightmap, obs.goal_mask, heads=("grasp",))
                action, q = best_pixel(grasp_q, obs.goal_mask > 0)
                result = robot.grasp(action, obs.depth_heightmap)
                results[name].append({"scene": k, "q": float(q), "goal_taken": bool(result.success and
                                                                                    result.object_index == GOAL_INDEX),
                                      "other_taken": bool(result.success and result.object_index != GOAL_INDEX),
                                      "occupancy": float(obs.goal_occupancy), "digest": digest})
            taken = [r["goal_taken"] for r in results[name] if r["goal_taken"] is not None]
            print(f"{name}: goal taken in {100 * np.mean(taken):.0f} % of {len(taken)} held-out scenes", flush=True)
    finally:
        sim.close()
    return results


def held_out_by_arm(results: dict[str, list[dict]], names: list[str]) -> dict:
    """Over one arm's tested snapshots: the share of held-out grasps that took the goal, that took
    another object, and their mean Q."""
    rows = [r for name in names for r in results[name] if r["goal_taken"] is not None]
    return {"grasps": len(rows), "goal_taken": float(np.mean([r["goal_taken"] for r in rows])),
            "other_taken": float(np.mean([r["other_taken"] for r in rows])),
            "mean_q": float(np.mean([r["q"] for r in rows]))}


def paired(results: dict[str, list[dict]], seed: int, names: list[str]) -> dict:
    """The two arms of a seed on the same (snapshot iteration, scene) pairs: how often only one
    took the goal, and a two-sided sign test on those discordant pairs. The pairs of one arm's
    snapshots are not independent (each snapshot grew from the last), so p is a rough guide."""
    from scipy.stats import binomtest

    outcome = {}
    for name in names:
        arm_seed, iteration = name.split("@")
        arm, run_seed = arm_seed.split("-seed")
        if int(run_seed) == seed:
            for r in results[name]:
                outcome[(arm, int(iteration), r["scene"])] = r["goal_taken"]
    keys = {(it, scene) for arm, it, scene in outcome if (("relabel", it, scene) in outcome and
                                                          ("norelabel", it, scene) in outcome)}
    only_relabel = sum(1 for it, scene in keys if outcome[("relabel", it, scene)] and not outcome[("norelabel", it, scene)])
    only_plain = sum(1 for it, scene in keys if outcome[("norelabel", it, scene)] and not outcome[("relabel", it, scene)])
    n = only_relabel + only_plain
    return {"pairs": len(keys), "only_relabelling_took_the_goal": only_relabel,
            "only_no_relabelling_took_the_goal": only_plain,
            "sign_test_p": float(binomtest(only_relabel, n).pvalue) if n else None}


def neighbour_grasps(session: Path):
    """The training grasps that took another object than the goal (what relabelling stores again):
    their number, the session's Logger (to load each one's heightmaps) and, for those whose masks
    were saved, (iteration, (rotation, row, col), goal mask, taken object's mask) (masks 0/255)."""
    from logger import Logger, read_log_file

    logger = Logger(continue_logging=True, logging_directory=session, verbose=False)
    transitions = session / "transitions"
    actions = read_log_file(transitions / "executed-action.log.txt")
    grasp_obj = read_log_file(transitions / "grasp-obj.log.txt").ravel()
    goal_obj = read_log_file(transitions / "goal-obj.log.txt").ravel()
    n = min(actions.shape[0], grasp_obj.size, goal_obj.size)
    took = np.flatnonzero((grasp_obj[:n] >= 0) & (grasp_obj[:n] != goal_obj[:n]))
    with_masks = []
    for i in took:
        goal_mask, taken_mask = logger.load_mask(int(i), "goal"), logger.load_mask(int(i), "grasped")
        if goal_mask is not None and taken_mask is not None:
            with_masks.append((int(i), tuple(int(v) for v in actions[i, 1:4]), goal_mask, taken_mask))
    return int(took.size), logger, with_masks


def goal_input_separation(session: Path, snapshot: Path) -> dict:
    """At each training grasp that took a neighbour (the grasps relabelling stores again), the
    snapshot's Q of that very grasp given the goal's mask and given the taken object's mask. A net
    that tells the two goals apart rates the grasp low for the goal, which it failed, and high for
    the object it took."""
    from trainer import trainer_for_snapshot

    trainer = trainer_for_snapshot(snapshot)
    _, logger, grasps = neighbour_grasps(session)
    q_goal, q_taken = [], []
    for i, (rotation, row, col), goal_mask, taken_mask in grasps:
        color, depth = logger.load_heightmaps(i)
        for mask, out in ((goal_mask, q_goal), (taken_mask, q_taken)):
            _, q = trainer.forward(color, depth, mask, rotations=[rotation], heads=("grasp",))
            out.append(float(q[0, row, col]))
    return {"grasps": len(q_goal), "snapshot": snapshot.name,
            "mean_q_given_the_goal": float(np.mean(q_goal)) if q_goal else None,
            "mean_q_given_the_taken_object": float(np.mean(q_taken)) if q_taken else None}


def training_summary(session: Path) -> dict:
    """From the training logs: grasps, those that took a neighbour (what relabelling stores again),
    the greedy goal grasp success over the last 100 and the first grasp at which it reached 80 %."""
    import evaluate

    curve = evaluate.training_curve(session)
    neighbour, _, grasps = neighbour_grasps(session)
    # Where a relabelled grasp sits: inside the goal's mask (the policy's pixels always are) and
    # inside the grasped object's (the relabelled goal's) mask, i.e. where the two overlap.
    in_both = sum(bool(goal_mask[row, col] and taken_mask[row, col])
                  for _, (_, row, col), goal_mask, taken_mask in grasps)
    greedy = curve["greedy_success_ma"]
    reached = [int(e) for i, (e, v) in enumerate(zip(curve["greedy_episodes"], greedy)) if i + 1 >= 100 and v >= 0.8]
    return {"grasps": int(curve["episodes"].size), "grasps_taking_a_neighbour": neighbour,
            "neighbour_grasps_inside_both_masks": in_both, "neighbour_grasps_with_masks": len(grasps),
            "goal_grasps": int(curve["goal_success"].sum()),
            "greedy_grasps": int(curve["greedy_episodes"].size),
            "final_greedy_success_last100_pct": 100 * float(greedy[-1]) if greedy.size else None,
            "first_episode_greedy_last100_at_80pct": reached[0] if reached else None}


def plot(curves: dict[str, dict[int, float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    seeds = sorted({label.split("-seed")[1] for label in curves})
    for label, points in sorted(curves.items(), key=lambda item: item[0].split("-seed")[1]):
        xs = sorted(points)
        arm, seed = label.split("-seed")
        # one colour per seed, the arms told apart by the line: the comparison is within a seed
        ax.plot(xs, [100 * points[x] for x in xs], marker="o", color=f"C{seeds.index(seed)}",
                linestyle="-" if arm == "relabel" else "--",
                label=f"seed {seed}, {'relabelling' if arm == 'relabel' else 'no relabelling'}")
    ax.set_xlabel("stage-1 iterations (grasps)")
    ax.set_ylabel("goal grasp success on held-out scenes %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the lines span the whole range
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default=str(Path.home() / "relabelling-crowded"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--scene", choices=["crowded_goal", "random"], default="crowded_goal")
    parser.add_argument("--eval_every", type=int, default=100, help="test the snapshots at multiples of this")
    parser.add_argument("--eval_scenes", type=int, default=40, help="held-out crowded scenes per snapshot")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at once")
    parser.add_argument("--json", default=None, help="where to write the summary (default bench/results/)")
    args = parser.parse_args(argv)
    if args.iterations < args.eval_every or args.eval_every < 50 or args.eval_every % 50 or args.eval_scenes < 1:
        print("error: need --eval_every a multiple of 50 (main.py's snapshot period), --iterations >= "
              "--eval_every and --eval_scenes >= 1", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir).expanduser()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_arms(run_dir, args.seeds, args.iterations, args.scene, args.jobs)

    cache_path = run_dir / "held-out.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cache.get("settings") != {"scenes": args.eval_scenes, "seed": HELD_OUT_SEED}:
        cache = {"settings": {"scenes": args.eval_scenes, "seed": HELD_OUT_SEED}, "results": {}}
    tested = {f"{arm}-seed{seed}": {it: path for it, path in
                                    snapshots_of(run_dir / f"{arm}-seed{seed}", args.eval_every).items()
                                    if it <= args.iterations}
              for seed in args.seeds for arm in ARMS}
    wanted = {f"{arm_seed}@{it}": path for arm_seed, by_it in tested.items() for it, path in by_it.items()}
    todo = {name: path for name, path in wanted.items() if name not in cache["results"]}
    if todo:
        cache["results"].update(held_out_grasps(todo, args.eval_scenes, HELD_OUT_SEED))
        cache_path.write_text(json.dumps(cache, indent=1) + "\n")

    digests = {}
    for rows in cache["results"].values():
        for r in rows:
            digests.setdefault(r["scene"], set()).add(r["digest"])
    curves: dict[str, dict[int, float]] = {}
    for name in wanted:
        arm_seed, it = name.split("@")
        taken = [r["goal_taken"] for r in cache["results"][name] if r["goal_taken"] is not None]
        curves.setdefault(arm_seed, {})[int(it)] = float(np.mean(taken))
    summary = {
        "bench": "relabelling", "date": datetime.date.today().isoformat(), "scene": args.scene,
        "seeds": args.seeds, "iterations": args.iterations, "eval_every": args.eval_every,
        "held_out_scenes": args.eval_scenes, "held_out_seed": HELD_OUT_SEED,
        "held_out_scenes_identical_for_every_snapshot": all(len(d) == 1 for d in digests.values()),
        "held_out_goal_grasp_success": curves,
        "held_out_mean_over_checkpoints": {k: float(np.mean(list(v.values()))) for k, v in curves.items()},
        "held_out_by_arm": {arm_seed: held_out_by_arm(cache["results"], [f"{arm_seed}@{it}" for it in by_it])
                            for arm_seed, by_it in tested.items() if by_it},
        "held_out_paired": {f"seed{seed}": paired(cache["results"], seed, list(wanted)) for seed in args.seeds},
        "training": {arm_seed: training_summary(run_dir / arm_seed) for arm_seed in tested},
        # the last snapshot of each arm at its own neighbour grasps: does the goal input tell them apart?
        "neighbour_grasps_q_by_goal_input": {arm_seed: goal_input_separation(run_dir / arm_seed, by_it[max(by_it)])
                                             for arm_seed, by_it in tested.items() if by_it},
        "seconds": time.perf_counter() - started,
    }
    plot(curves, run_dir / "curves-relabelling.png",
         f"Stage 1 in {args.scene} scenes, with and without goal relabelling")
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"relabelling-{summary['date']}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {out} and {run_dir / 'curves-relabelling.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
