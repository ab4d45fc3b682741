"""Train and test goal-oriented push-grasping (Xu et al. 2021) from the command line.

Read top to bottom: the run configuration (a typed dataclass whose field docs are `--help`,
flag names as in the paper's README), then set-up, then one plain loop:
observe -> label the previous action -> reset if needed -> choose -> act, while the previous
action's label is learned (the physics of the action runs in a thread meanwhile).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args, get_type_hints

import numpy as np

# torchvision must be imported before MuJoCo creates its EGL context: importing it afterwards
# (torchvision -> torch._dynamo -> triton -> cuda.bindings) segfaults with Mesa's EGL.
import torchvision  # noqa: F401

import checkpoint
import logger as logger_table
import rules
import utils
import validation
from robot import PUSH_LENGTH_M, Robot
from rules import (GOAL_OCCUPANCY_THRESHOLD, best_pixel, choose_primitive_goal_agnostic,
                   choose_primitive_goal_conditioned, choose_primitive_push_only, explore_probability,
                   grasp_explore_probability, masked_max, random_primitive, random_push, reward_and_label)
from fault_injection import kill_point, sim_fault
from trainer import Transition, relabel_grasp_transition
from utils import UserError


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # --- robot and scene
    sim: Literal["mujoco", "coppeliasim"] = _f("mujoco", "simulator backend (ignored with --real)")
    real: bool = _f(False, "drive a real UR5 + RealSense instead of a simulator (see real/README.md)")
    is_sim: bool = _f(True, "kept for the paper's command lines; use --real for the real robot")
    dry_run: bool = _f(False, "real robot: validate and log every motion but send none")
    robot_ip: str = _f("192.168.1.10", "real robot: UR controller address (the Robotiq URCap listens there too)")
    calibration_dir: str = _f("real", "real robot: folder of camera_pose.txt from `python -m real.calibrate`")
    replay_camera_dir: str = _f("", "real robot dry run: replay a session's colour/depth frames (its folder or "
                                    "data/ folder; its own camera intrinsics); default a synthetic table with blocks")
    cell_file: str = _f("", "real robot: the cell file (workspace, table, bin, home, tool offset) that "
                            "`python -m real.calibrate` writes (default CALIBRATION_DIR/cell.json)")
    coppeliasim_host: str = _f("127.0.0.1", "CoppeliaSim ZMQ remote API host")
    coppeliasim_port: int = _f(23000, "CoppeliaSim ZMQ remote API port")
    obj_mesh_dir: str = _f("", "folder of .obj meshes (default: the project's generated toy blocks)")
    num_obj: int = _f(10, "objects dropped into a random training scene")
    heightmap_resolution: float = _f(0.002, "metres per heightmap pixel")
    random_seed: int = _f(1234, "seed of the one random generator (CPU runs are repeatable)")
    cpu: bool = _f(False, "force the CPU even when CUDA is available")
    force_cpu: bool = _f(False, "alias of --cpu (VPG's flag)")

    # --- learning
    stage: Literal["grasp_only", "push_only", "push_grasp"] = _f("grasp_only", "training stage (SPEC 5)")
    policy: Literal["learned", "heuristic"] = _f("learned", "heuristic: VPG's depth heuristics, no network")
    backbone: Literal["densenet121", "resnet18", "tiny", "tiny16", "tiny16ctx"] = _f(
        None, "trunk network; densenet121 is the paper's (default: the snapshot's own with --load_snapshot, "
              "else densenet121)")
    pretrained_weights: str = _f("", "ImageNet weights file for the trunks (default: torchvision cache if present)")
    precision: Literal["fp32", "bf16"] = _f("fp32", "bf16 autocasts the forward passes (faster, not faithful)")
    goal_conditioned: bool = _f(False, "goal-oriented task: grasps are chosen inside the goal mask and only the "
                                       "goal pays (the paper's code); needed by every goal-conditioned net")
    grasp_goal_conditioned: bool = _f(False, "goal-conditioned networks (a goal-mask trunk); without it the net is "
                                             "goal-agnostic, as the explore model of --grasp_explore")
    goal_relabelling: bool = _f(True, "stage grasp_only: store a grasp of another object again as a success for "
                                      "that object (off: --no_goal_relabelling, the paper's ablation)")
    train_scene: Literal["random", "crowded_goal"] = _f(
        None, "training scenes: random drops, or the goal dropped first with the others packed around it like "
              "the challenging cases (default: crowded_goal in push_only, random otherwise)")
    push_reward: Literal["grasp_net", "change"] = _f(
        "grasp_net", "push_only push reward: the paper's (the grasp net's improvement and the goal's occupancy), "
                     "or VPG's change-only reward (0.5 when the goal's surroundings changed; the ablation)")
    goal_obj_idx: int = _f(-1, "index of the goal object (-1: from the test-case file, else 0)")
    future_reward_discount: float = _f(0.5, "Q-learning discount gamma")
    learning_rate: float = _f(1e-4, "Adam learning rate (the paper's 1e-4)")
    experience_replay: bool = _f(False, "prioritised experience replay after each step")
    replay_capacity: int = _f(10000, "replay memory bound in transitions; the oldest go first (about 3 KiB each "
                                     "for rendered heightmaps, up to 130 KiB for noisy camera ones)")
    replay_max_mb: float = _f(0.0, "replay memory bound in MB of stored heightmaps (0: only --replay_capacity)")
    replay_steps: int = _f(1, "prioritised replay steps after each action (the paper's code: 1); more reuse each "
                                 "stored transition more often, for a light backbone learning from few samples")
    replay_candidates: Literal["paper", "other_reward"] = _f(
        "paper", "replayed samples: the paper's code's (pushes rewarded 0 or 0.5; goal grasps that succeeded, "
                 "after a failure), or VPG's simplification (any sample whose reward differs from the current one)")
    heuristic_bootstrap: bool = _f(False, "use the depth heuristic after 2 no-change actions in a row")
    explore_rate_decay: bool = _f(False, "decay the exploration probability over iterations")
    grasp_explore: bool = _f(False, "stage grasp_only: explore with a goal-agnostic grasp model")
    grasp_explore_policy: Literal["model", "heuristic"] = _f(
        "model", "what --grasp_explore explores with: the goal-agnostic explore model (the paper's), or the "
                 "depth heuristic's grasp inside the goal mask (no explore snapshot needed)")
    push_explore_policy: Literal["heuristic", "random"] = _f(
        "heuristic", "what a push_only push explores with (at --explore_rate_decay's rate): the depth heuristic's "
                     "push into an edge beside the goal, or a uniformly random push among those the learned policy "
                     "may choose (every rotation; free space near the goal, end inside the workspace)")
    load_explore_snapshot: bool = _f(False, "load --explore_snapshot_file as the explore model")
    explore_snapshot_file: str = _f("", "goal-agnostic snapshot used by --grasp_explore")
    grasp_reward_threshold: float = _f(1.8, "Qg: a goal grasp Q above this ends a push episode with a grasp")
    push_end_margin_m: float = _f(0.06, "learned pushes are chosen among those whose full-length end lies this far "
                                        "inside the workspace (the robot stops a push at the border, and the object "
                                        "ahead of the finger would leave it); -0.2 allows every push, the paper's code")
    goal_grasp_q_threshold: float = _f(1.5, "push_grasp, goal-oriented: grasp once the best goal grasp Q reaches this "
                                            "and the goal's occupancy is at most 0.3, else push (SPEC 5's 1.5, set for "
                                            "the paper's Q scale)")
    max_push_episode_length: int = _f(5, "pushes before the grasp that ends a push_only episode")
    max_pushes_before_grasp: int = _f(0, "push_grasp, goal-oriented: grasp after this many pushes in a row even "
                                         "when the goal grasp Q is below --goal_grasp_q_threshold, as each push_only "
                                         "training episode ends with a grasp after 5 (0: the paper's rule, push "
                                         "until the Q reaches the threshold)")
    alternating_training: bool = _f(False, "push_only: freeze the push net and train the grasp net in pushed scenes")
    alternating_grasp_labels: Literal["grasp_only", "push_only", "goal_probability"] = _f(
        "grasp_only", "--alternating_training's grasp labels: stage 1's rule (1 for the goal + gamma * the next "
                      "scene's goal grasp Q), which keeps the grasp Q near the scale the test rule's 1.5 threshold "
                      "expects; SPEC 5's push_only rule (1.5, -1 on a miss, + gamma * next push Q), which pulls it "
                      "below 1.5; or goal_probability (2 for the goal, else 0: the Q is 2 x the chance of taking "
                      "the goal, whatever the next scene) (README, Differences)")
    cooperative_training: bool = _f(False, "train the push and grasp nets together")
    overlap_learning: bool = _f(None, "run each action's physics in a thread while the previous transition is "
                                      "back-propagated (VPG's code did so too); the labels are the same as with "
                                      "--no_overlap_learning. Default: on when the network leaves CPU cores free "
                                      "(CUDA, or fewer torch threads than cores), off where torch's threads fill "
                                      "them, since there the physics only slows the backprop (bench/iteration.py)")
    max_iterations: int = _f(0, "stop cleanly after this many iterations in all (0: run until stopped or, "
                                "when testing, until --max_test_trials)")

    # --- testing
    is_testing: bool = _f(False, "test: trials end when the goal is grasped; no replay, no snapshots")
    test_learning: bool = _f(True, "testing back-propagates each action's label and restores the snapshot at the "
                                   "end of every trial (the paper's and VPG's code: a push or grasp that failed "
                                   "is not repeated); --no_test_learning tests a frozen policy")
    max_test_trials: int = _f(30, "trials per test run (the paper's n)")
    max_goal_grasp_failures: int = _f(10, "a test trial fails after this many failed grasps in a row")
    max_trial_actions: int = _f(0, "a test trial fails after this many actions (0: no cap, the paper's code); "
                                   "a policy that keeps pushing then ends its trial instead of the whole run")
    test_preset_cases: bool = _f(False, "test on a preset scene from --test_preset_file")
    test_preset_file: str = _f("", "test-case file: `mesh r g b x y z rx ry rz` per object")
    preset_jitter_mm: float = _f(3.0, "each test trial moves every object of the preset case by a random offset "
                                      "up to this (x and y), so trials differ; 0 with --preset_jitter_deg 0: the "
                                      "exact file every trial")
    preset_jitter_deg: float = _f(3.0, "each test trial turns every object of the preset case about the vertical "
                                       "by a random angle up to this")

    # --- snapshots and logs
    load_snapshot: bool = _f(False, "load --snapshot_file before running")
    snapshot_file: str = _f("", "network snapshot (.pth)")
    continue_logging: bool = _f(False, "resume the session in --logging_directory")
    logging_directory: str = _f("", "session directory to resume")
    logs_dir: str = _f("logs", "where new session directories are made")
    save_visualizations: bool = _f(False, "write affordance maps and the chosen action per iteration")
    save_video: bool = _f(False, "write a video of each trial (camera and heightmap, the chosen action drawn) "
                                 "to SESSION/videos/trial-NNN.gif (trial_video.py)")
    video_format: Literal["gif", "mp4"] = _f("gif", "--save_video's file format")
    verbose: bool = _f(False, "one line per action (always so when stderr is not a terminal, e.g. a log file); "
                              "on a terminal the default is a progress bar")
    snapshot_interval: int = _f(50, "iterations between snapshots")

    @property
    def device(self) -> str:
        import torch

        return "cpu" if (self.cpu or self.force_cpu or not torch.cuda.is_available()) else "cuda"

    @property
    def is_goal_conditioned(self) -> bool:
        """The task is goal-oriented (goal masks, goal rewards); the net's inputs follow
        --grasp_goal_conditioned."""
        return self.goal_conditioned

    @property
    def scene_kind(self) -> str:
        if self.train_scene:
            return self.train_scene
        return "crowded_goal" if (self.stage == "push_only" and self.goal_conditioned) else "random"


ALIASES = {"continue_logging": ["--continu_logging"]}
NEGATABLE = ("goal_relabelling", "test_learning", "overlap_learning")  # default-on switches: --no_<name> turns them off


def overlap_pays(device: str) -> bool:
    """Whether an action's physics can run beside back-propagation on a free core: always with
    CUDA; on a CPU only when torch's threads leave a core (measured, README "Speed")."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return device == "cuda" or torch.get_num_threads() < cores


def build_parser() -> argparse.ArgumentParser:
    parser = validation.OneLineParser(
        description="Goal-oriented push-grasping (Xu et al. 2021): train and test on a simulator or a real UR5.")
    hints = get_type_hints(Config)
    for f in dataclasses.fields(Config):
        flags = [f"--{f.name}"] + ALIASES.get(f.name, [])
        kind = hints[f.name]
        helptext = f.metadata["help"]
        if kind is bool and f.name in NEGATABLE:
            # --no_<name> in the project's underscore style (and argparse's --no-<name>).
            group = parser.add_mutually_exclusive_group()
            group.add_argument(*flags, dest=f.name, action="store_true", default=f.default, help=helptext)
            group.add_argument(f"--no_{f.name}", f"--no-{f.name}", dest=f.name, action="store_false",
                               help=f"turn --{f.name} off")
        elif kind is bool:
            parser.add_argument(*flags, dest=f.name, action="store_true", default=f.default, help=helptext)
        elif getattr(kind, "__origin__", None) is Literal:
            parser.add_argument(*flags, dest=f.name, choices=get_args(kind), default=f.default,
                                help=helptext if f.default is None else f"{helptext} (default {f.default})")
        else:
            parser.add_argument(*flags, dest=f.name, type=kind, default=f.default,
                                help=f"{helptext} (default {f.default!r})" if f.default != "" else helptext)
    return parser


def parse_config(argv: list[str] | None = None) -> Config:
    return Config(**vars(build_parser().parse_args(argv)))


# ==============================================================================================
# Set-up
# ==============================================================================================
HEURISTIC_AFTER_NO_CHANGE = 2
# Goal-oriented pushes, learned or heuristic, start this close to the goal (6 cm; a push moves 13 cm).
PUSH_NEAR_GOAL_PX = 30


def check_config(cfg: Config) -> None:
    """User input errors, each one clear line (UserError), before anything starts."""
    validation.check_values(cfg)
    if cfg.num_obj < 1:
        raise UserError(f"--num_obj must be at least 1, got {cfg.num_obj}")
    if cfg.test_preset_cases and not cfg.test_preset_file:
        raise UserError("--test_preset_cases needs --test_preset_file")
    if cfg.test_preset_file and not Path(cfg.test_preset_file).is_file():
        raise UserError(f"test-case file not found: {cfg.test_preset_file}")
    for name in ("preset_jitter_mm", "preset_jitter_deg"):
        value = getattr(cfg, name)
        if not (np.isfinite(value) and 0 <= value <= 20):
            raise UserError(f"--{name} must be between 0 and 20, got {value}")
    if not (np.isfinite(cfg.learning_rate) and 0 < cfg.learning_rate <= 1):
        raise UserError(f"--learning_rate must be in (0, 1], got {cfg.learning_rate}")
    if not 1 <= cfg.replay_capacity <= 10_000_000:
        raise UserError(f"--replay_capacity must be between 1 and 10000000, got {cfg.replay_capacity}")
    if not (np.isfinite(cfg.replay_max_mb) and cfg.replay_max_mb >= 0):
        raise UserError(f"--replay_max_mb must be >= 0 (0: no byte bound), got {cfg.replay_max_mb}")
    if not (np.isfinite(cfg.push_end_margin_m) and -0.5 <= cfg.push_end_margin_m <= 0.15):
        raise UserError(f"--push_end_margin_m must be between -0.5 and 0.15 m, got {cfg.push_end_margin_m}")
    if not (np.isfinite(cfg.goal_grasp_q_threshold) and -10 <= cfg.goal_grasp_q_threshold <= 10):
        raise UserError(f"--goal_grasp_q_threshold must be between -10 and 10, got {cfg.goal_grasp_q_threshold}")
    if cfg.max_trial_actions < 0:
        raise UserError(f"--max_trial_actions must be >= 0 (0: no cap), got {cfg.max_trial_actions}")
    if cfg.max_pushes_before_grasp < 0:
        raise UserError(f"--max_pushes_before_grasp must be >= 0 (0: the paper's rule), got {cfg.max_pushes_before_grasp}")
    if not 1 <= cfg.replay_steps <= 64:
        raise UserError(f"--replay_steps must be between 1 and 64, got {cfg.replay_steps}")
    if cfg.load_snapshot and not cfg.snapshot_file:
        raise UserError("--load_snapshot needs --snapshot_file")
    if cfg.load_snapshot and not Path(cfg.snapshot_file).is_file():
        raise UserError(f"snapshot file not found: {cfg.snapshot_file}")
    if cfg.grasp_explore and cfg.grasp_explore_policy == "model" and \
            not (cfg.load_explore_snapshot and cfg.explore_snapshot_file):
        raise UserError("--grasp_explore needs --load_explore_snapshot --explore_snapshot_file")
    if cfg.load_explore_snapshot and not Path(cfg.explore_snapshot_file).is_file():
        raise UserError(f"explore snapshot file not found: {cfg.explore_snapshot_file}")
    if cfg.continue_logging and not cfg.logging_directory:
        raise UserError("--continue_logging needs --logging_directory")
    if cfg.is_testing and cfg.policy == "learned" and not cfg.load_snapshot:
        print("notice: testing without --load_snapshot uses untrained networks", file=sys.stderr)
    if cfg.stage == "push_only" and not cfg.is_goal_conditioned:
        raise UserError("--stage push_only rewards pushes by the goal's grasp Q and occupancy (SPEC 5): "
                        "add --grasp_goal_conditioned --goal_conditioned")
    if cfg.grasp_goal_conditioned and not cfg.goal_conditioned:
        raise UserError("--grasp_goal_conditioned builds a net that reads a goal mask: add --goal_conditioned")
    if cfg.train_scene == "crowded_goal" and not cfg.goal_conditioned:
        raise UserError("--train_scene crowded_goal packs objects around the goal: add --goal_conditioned")
    if cfg.push_reward != "grasp_net" and cfg.stage != "push_only":
        raise UserError("--push_reward chooses the push_only push reward: use it with --stage push_only")
    if cfg.alternating_training and cfg.stage != "push_only":
        raise UserError("--alternating_training belongs to --stage push_only (README, stage 3)")


def resolve_network(cfg: Config) -> tuple[str, str]:
    """(architecture, backbone) of the run's net. A snapshot describes itself: its own metadata
    (or, for a bare state_dict, its keys) decide, and a flag that says otherwise is an error."""
    import models

    wanted_arch = "goal_conditioned" if cfg.grasp_goal_conditioned else "goal_agnostic"
    if not cfg.load_snapshot:
        return wanted_arch, cfg.backbone or "densenet121"
    arch, backbone = models.describe_snapshot(cfg.snapshot_file)
    if cfg.backbone and cfg.backbone != backbone:
        raise UserError(f"--backbone {cfg.backbone} contradicts snapshot {cfg.snapshot_file}, which holds a "
                        f"{backbone} net: drop --backbone (the snapshot says which) or load another snapshot")
    if cfg.grasp_goal_conditioned and arch != "goal_conditioned":
        raise UserError(f"--grasp_goal_conditioned contradicts snapshot {cfg.snapshot_file}, which holds a "
                        f"goal-agnostic net: drop --grasp_goal_conditioned or load a goal-conditioned snapshot")
    if arch == "goal_conditioned" and not cfg.goal_conditioned:
        raise UserError(f"snapshot {cfg.snapshot_file} holds a goal-conditioned net, which needs a goal: "
                        f"add --goal_conditioned (and --grasp_goal_conditioned, as the paper's command lines)")
    return arch, backbone


def make_real_backend(cfg: Config):
    """UR5 + Robotiq + RealSense, described by the cell file; a dry run prints its checked plan."""
    from real.ur5 import open_real_cell

    return open_real_cell(cfg.robot_ip, cfg.calibration_dir, cfg.cell_file or None, dry_run=cfg.dry_run,
                          replay_camera_dir=cfg.replay_camera_dir or None,
                          heightmap_resolution_m=cfg.heightmap_resolution)


def make_backend(cfg: Config, test_case=None, rng: np.random.Generator | None = None):
    """The one place that knows which backend is behind the Robot. rng: the run's generator for
    a first random scene (None: the scene waits for reset_scene(rng) or a test case)."""
    limits = utils.WORKSPACE_LIMITS_M
    if cfg.real:
        return make_real_backend(cfg)
    if cfg.sim == "coppeliasim":
        from simulation.coppeliasim import CoppeliaSimBackend

        return CoppeliaSimBackend(host=cfg.coppeliasim_host, port=cfg.coppeliasim_port,
                                  obj_mesh_dir=cfg.obj_mesh_dir or None, num_obj=cfg.num_obj,
                                  workspace_limits_m=limits, heightmap_resolution_m=cfg.heightmap_resolution,
                                  test_case=test_case, rng=rng)
    from simulation.mujoco_sim import MujocoSim

    return MujocoSim(obj_mesh_dir=cfg.obj_mesh_dir or None, num_obj=cfg.num_obj,
                     workspace_limits_m=limits, heightmap_resolution_m=cfg.heightmap_resolution,
                     test_case=test_case, rng=rng)


# ==============================================================================================
# The loop's records
# ==============================================================================================
@dataclass
class Observation:
    color_image: np.ndarray  # (H, W, 3) uint8
    depth_image: np.ndarray  # (H, W) metres
    color_heightmap: np.ndarray  # (224, 224, 3) uint8
    depth_heightmap: np.ndarray  # (224, 224) metres above the table, empty cells 0
    masks: dict  # object index -> (224, 224) uint8 footprint, objects in the workspace
    goal_mask: np.ndarray | None  # (224, 224) uint8 0/255, or None when goal-agnostic

    @functools.cached_property
    def goal_occupancy(self) -> float:
        """SPEC 3 occupancy ratio of the goal; 0 when goal-agnostic."""
        return 0.0 if self.goal_mask is None else utils.occupancy_ratio(self.goal_mask, self.depth_heightmap)

    @functools.cached_property
    def push_allowed(self) -> np.ndarray:
        """SPEC 5: pushes start where no object is."""
        occupied = np.zeros(self.depth_heightmap.shape, dtype=bool)
        for mask in self.masks.values():
            occupied |= mask > 0
        return ~occupied & (self.depth_heightmap <= utils.OBJECT_HEIGHT_THRESHOLD_M)

    @functools.cached_property
    def push_allowed_near_goal(self) -> np.ndarray:
        """Goal-oriented pushes start in free space within PUSH_NEAR_GOAL_PX of the goal: a push
        that starts farther away cannot change the goal's surroundings (the paper's code lets
        them start anywhere). All free space when the goal is gone or has no free border."""
        near = self.free_near_goal
        return near if near is not None and near.any() else self.push_allowed

    @functools.cached_property
    def free_near_goal(self) -> np.ndarray | None:
        """Free space within PUSH_NEAR_GOAL_PX of the goal (possibly empty); None when goal-agnostic
        or the goal is gone."""
        if self.goal_mask is None or not self.goal_mask.any():
            return None
        return utils.dilate(self.goal_mask > 0, PUSH_NEAR_GOAL_PX) & self.push_allowed


def observe(robot: Robot, goal_obj: int | None) -> Observation:
    """The robot's current observation: images, heightmaps, every object's mask, and the goal's
    mask (all zeros once the goal is gone; None when goal_obj is None, goal-agnostic)."""
    color, depth, color_hm, raw_depth_hm = robot.get_heightmaps()
    depth_hm = utils.valid_depth(raw_depth_hm)
    masks = robot.object_masks(color_hm, depth_hm)
    goal_mask = None if goal_obj is None else masks.get(goal_obj, np.zeros(depth_hm.shape, dtype=np.uint8))
    return Observation(color, depth, color_hm, depth_hm, masks, goal_mask)


def learned_push_starts(push_allowed: np.ndarray, push_end_margin_m: float,
                        heightmap_resolution_m: float) -> np.ndarray:
    """(R, H, W) bool: the pushes a learned policy may choose, those of push_allowed (H, W) whose
    full-length end stays push_end_margin_m inside the workspace (README, Differences); all of
    push_allowed, every rotation, when none does."""
    margin_px = int(round(push_end_margin_m / heightmap_resolution_m))
    length_px = int(round(PUSH_LENGTH_M / heightmap_resolution_m))
    inside = push_allowed[None] & utils.push_end_inside(push_allowed.shape[0], length_px, margin_px)
    return inside if inside.any() else np.broadcast_to(push_allowed[None], inside.shape)


@dataclass
class Pending:
    """The last executed action, waiting for the next observation to be labelled."""
    obs: Observation
    primitive: str
    action: tuple[int, int, int]
    predicted: float
    is_exploit: bool
    use_heuristic: bool
    grasp_success: bool
    grasp_obj: int
    goal_obj: int
    push_step: int
    episode: int
    best_goal_grasp_q_before: float
    occupancy_before: float


@dataclass
class Lesson:
    """A labelled action, logged and counted, still to be learned from (Runner._learn)."""
    pending: Pending
    label: float
    reward: float
    goal_grasped: bool
    next_goal_grasp_max: float


@dataclass
class Progress:
    """Every counter the loop needs to resume exactly; saved as JSON beside the snapshots."""
    iteration: int = 0
    trials_finished: int = 0
    episode: int = 0
    push_step: int = 0
    pushes_since_grasp: int = 0  # in this scene
    no_change_count: int = 0
    no_change_in_a_row: dict = field(default_factory=lambda: {"push": 0, "grasp": 0})
    grasp_failures_in_a_row: int = 0
    goal_obj: int = 0
    goal_successes: list = field(default_factory=list)  # last 100 grasp outcomes on the goal
    trial_start_iteration: int = 0  # the iteration the current scene (test trial) began at
    rng_state: dict = field(default_factory=dict)


PRIMITIVE_CODE = {"push": 0, "grasp": 1}
MAX_FAULTY_SCENES = 5  # simulator faults in this many scenes (or trials) in a row stop the run
# The transition logs written every iteration: logger.TRANSITION_LOGS, the one table.
PER_ITERATION_LOGS = logger_table.PER_ITERATION_LOGS
# Every TensorBoard scalar (SESSION/tensorboard), by its stable name; the README lists them.
# The step is the iteration count after the action. Runner._scalar refuses any other name.
TENSORBOARD_SCALARS = {
    "grasp/goal_success_rate_last100": "goal-oriented: share of the last 100 grasps that took the goal",
    "grasp/success_rate_last100": "goal-agnostic: share of the last 100 grasps that took an object",
    "grasp/reward": "each grasp's reward",
    "push/reward": "each push's reward",
    "push/improved_grasp_reward": "each push: the goal's best grasp Q rose (SPEC 5)",
    "push/decreased_occupancy": "each push: the goal's occupancy ratio fell",
    "train/grasp_loss": "the grasp net's loss on the action just taken",
    "train/push_loss": "the push net's loss on the action just taken",
    "train/grasp_replay_loss": "mean loss of the grasp replay steps after it",
    "train/push_replay_loss": "mean loss of the push replay steps after it",
}


# ==============================================================================================
# The loop
# ==============================================================================================
class Runner:
    """Owns the robot, the learner and the logs for one run; `run()` is the whole loop."""

    def __init__(self, cfg: Config) -> None:
        import logger as logger_mod

        check_config(cfg)
        self.cfg = cfg
        self.training = not cfg.is_testing
        self.goal_conditioned = cfg.is_goal_conditioned
        # Goal-conditioned testing and training in push_grasp use the push_only rules of SPEC 5
        # (push rewarded by the grasp net's improvement); goal-agnostic push_grasp is VPG's.
        self.reward_stage = rules.rule_set(cfg.stage, self.goal_conditioned)
        self.progress = Progress()
        self.rng = np.random.default_rng(cfg.random_seed)
        self.test_case = None
        if cfg.test_preset_cases or cfg.test_preset_file:
            from simulation.test_cases import load_test_case

            self.test_case = load_test_case(cfg.test_preset_file, mesh_dir=cfg.obj_mesh_dir or None)
        self.progress.goal_obj = self._initial_goal()
        self.trainer = self._make_trainer() if cfg.policy == "learned" else None
        # The session directory is made only once the networks and the robot are ready, so a
        # bad snapshot or an unreachable robot leaves no empty session behind.
        self.robot = Robot(make_backend(cfg, self.test_case), utils.WORKSPACE_LIMITS_M, cfg.heightmap_resolution)
        try:
            self.logger = logger_mod.Logger(continue_logging=cfg.continue_logging,
                                            logging_directory=cfg.logging_directory or None,
                                            base_directory=cfg.logs_dir)
        except BaseException:
            self.robot.close()
            raise
        if cfg.continue_logging:
            self._resume()
            self.progress.goal_obj = self._initial_goal()
        self.logger.save_config(dataclasses.asdict(cfg))
        self.logger.save_camera_info(self.robot.intrinsics, self.robot.camera_pose, self.robot.depth_scale)
        self.logger.save_heightmap_info(self.robot.workspace_limits_m, cfg.heightmap_resolution)
        self.pending: Pending | None = None
        self._bar = None  # the progress bar (progress_bar.py), while run() runs on a terminal
        self._faulty_trials_in_a_row = 0
        self._physics = None  # the thread that runs an action's physics while the last one is learned
        self.overlap_learning = cfg.overlap_learning if cfg.overlap_learning is not None else \
            (self.trainer is not None and overlap_pays(cfg.device))
        self._video = None
        if cfg.save_video:
            from trial_video import TrialVideo

            self._video = TrialVideo(Path(self.logger.session_directory) / "videos", self.robot.intrinsics,
                                     self.robot.camera_pose, self.robot.workspace_limits_m, cfg.heightmap_resolution,
                                     cfg.video_format)
        self._new_scene()

    # --- set-up helpers -----------------------------------------------------------------------
    def _make_trainer(self):
        from trainer import Trainer, TrainerConfig

        cfg = self.cfg
        architecture, backbone = resolve_network(cfg)
        trainer = Trainer(TrainerConfig(
            stage=cfg.stage, goal_conditioned=architecture == "goal_conditioned", backbone=backbone,
            goal_oriented=self.goal_conditioned, reward_stage=self.reward_stage,
            replay_candidates=cfg.replay_candidates, learning_rate=cfg.learning_rate,
            replay_capacity=cfg.replay_capacity,
            replay_max_bytes=int(cfg.replay_max_mb * 1e6) if cfg.replay_max_mb > 0 else None,
            device=cfg.device, future_reward_discount=cfg.future_reward_discount,
            alternating_training=cfg.alternating_training, alternating_grasp_labels=cfg.alternating_grasp_labels,
            cooperative_training=cfg.cooperative_training,
            pretrained_weights=cfg.pretrained_weights or "auto", precision=cfg.precision, seed=cfg.random_seed,
            snapshot_file=cfg.snapshot_file if cfg.load_snapshot else None,
            explore_snapshot_file=cfg.explore_snapshot_file if cfg.load_explore_snapshot else None))
        if cfg.load_snapshot:
            print(f"loaded snapshot {cfg.snapshot_file}")
        return trainer

    def _initial_goal(self) -> int:
        if not self.goal_conditioned:
            return -1
        goal = self.cfg.goal_obj_idx
        if goal < 0:
            goal = self.test_case.goal_obj_idx if self.test_case is not None and self.test_case.goal_obj_idx is not None else 0
        count = len(self.test_case.objects) if self.test_case is not None else self.cfg.num_obj
        if not 0 <= goal < count:
            raise UserError(f"goal index {goal} is out of range: the scene has {count} objects (0..{count - 1})")
        return goal

    def _state_path(self) -> Path:
        return Path(self.logger.session_directory) / "models" / f"state.{self.cfg.stage}"

    def _progress_path(self) -> Path:
        return Path(self.logger.session_directory) / "models" / f"progress.{self.cfg.stage}.json"

    def _save_state(self) -> None:
        """Resume state (trainer: networks, optimiser, replay; counters, random generator),
        committed whole or not at all (checkpoint.commit_state_dir), then the progress file."""
        self.progress.rng_state = self.rng.bit_generator.state
        progress = dataclasses.asdict(self.progress)

        def write(folder: Path) -> None:
            if self.trainer is not None and self.training:
                self.trainer.iteration = self.progress.iteration
                self.trainer.save_state(folder)
            (folder / "progress.json").write_text(json.dumps(progress, default=_json_default))

        checkpoint.commit_state_dir(self._state_path(), write, self.progress.iteration)
        self._save_progress()

    def _save_progress(self) -> None:
        """After every iteration: the logs fsynced, then the counters and the random generator."""
        self.progress.rng_state = self.rng.bit_generator.state
        self.logger.sync()
        checkpoint.write_json(self._progress_path(), dataclasses.asdict(self.progress), default=_json_default)

    def _resume(self) -> None:
        resume = self.logger.resume_state(PER_ITERATION_LOGS)
        rows = resume["iteration"]
        # The saved state is read (and a state that does not fit this run refused) before
        # anything in the session changes.
        state_dir = checkpoint.committed_state_dir(self._state_path())
        saved = checkpoint.read_json(state_dir / "progress.json") if state_dir is not None else None
        learned = 0  # the replay memory holds the transitions of the iterations before this one
        if saved is not None and self.trainer is not None and self.training and (state_dir / "trainer.json").is_file():
            self.trainer.load_state(state_dir)
            learned = min(self.trainer.iteration, rows)
        elif saved is None:
            print(f"notice: no saved state in {self._state_path()} (stopped before the first snapshot): the "
                  f"networks start afresh at iteration {rows}", file=sys.stderr)
        checkpoint.recover_state_dir(self._state_path())
        for name in resume["mismatched"]:
            # A crash between two appends left this log short: pad it (append-only) so every
            # log keeps one row per iteration; a padded row is no transition.
            self.logger.pad_to(name, rows)
        latest = checkpoint.read_json(self._progress_path())  # newer than the snapshot's, when whole
        if latest is not None and latest.get("iteration", -1) <= rows and \
                (saved is None or latest.get("iteration", -1) >= saved["iteration"]):
            saved = latest
        if saved is not None:
            known = {f.name for f in dataclasses.fields(Progress)}
            self.progress = Progress(**{k: v for k, v in saved.items() if k in known})
            if saved.get("rng_state"):
                self.rng.bit_generator.state = saved["rng_state"]
        if self.progress.iteration != rows:  # killed between a log append and the progress file
            self.progress.goal_successes, last_episode = checkpoint.logged_counters(self.logger, rows,
                                                                                    self.goal_conditioned)
            self.progress.episode = max(self.progress.episode, last_episode + 1)
        self.progress.iteration = rows
        if self.trainer is not None and self.training and learned < rows:
            relabel = self.cfg.stage == "grasp_only" and self.goal_conditioned and self.cfg.goal_relabelling
            transitions, missing = checkpoint.logged_transitions(
                self.logger, learned, rows, goal_conditioned=self.goal_conditioned, relabel=relabel)
            for transition in transitions:
                self.trainer.remember(transition)
            print(f"notice: {len(transitions)} transitions of iterations {learned}..{rows - 1}, logged after the "
                  f"newest snapshot, rebuilt into the replay memory from the session's heightmaps and logs"
                  + (f"; {len(missing)} lack their heightmaps or masks" if missing else ""), file=sys.stderr)
        trial_ends = resume["trial_ends"]
        if not self.training and rows > (trial_ends[-1] if trial_ends else 0):
            # The interrupted test trial cannot be continued (the scene is new): close it and mark
            # it aborted so evaluate.py leaves it out instead of merging it into the next trial.
            self.logger.append("clearance", [rows])
            self.logger.append("aborted-trial", [rows])
            print(f"notice: the test trial interrupted at iteration {rows} is recorded as aborted", file=sys.stderr)
        self.progress.trials_finished = self.logger.num_rows("clearance") - self.logger.num_rows("aborted-trial")
        print(f"resuming session {self.logger.session_directory} at iteration {rows}")

    # --- scene ----------------------------------------------------------------------------------
    def _new_scene(self) -> None:
        for attempt in range(1, MAX_FAULTY_SCENES + 1):
            self._build_scene()
            faults = self.robot.take_faults()
            if not faults:
                break
            self._record_faults(faults, "a new scene")
            if attempt == MAX_FAULTY_SCENES:
                raise UserError(f"the simulator faulted in {attempt} new scenes in a row ({faults[0].kind}: "
                                f"{faults[0].detail}); see {self._faults_path()}")
        self.progress.no_change_count = 0
        self.progress.no_change_in_a_row = {"push": 0, "grasp": 0}
        self.progress.grasp_failures_in_a_row = 0
        self.progress.push_step = 0
        self.progress.pushes_since_grasp = 0
        self.progress.trial_start_iteration = self.progress.iteration
        self.progress.episode += 1
        self.pending = None

    def _build_scene(self) -> None:
        if self.goal_conditioned:
            self.progress.goal_obj = self._initial_goal()
        if self.test_case is not None:
            from simulation.test_cases import jitter_case

            self.robot.load_test_case(jitter_case(self.test_case, self.rng, self.cfg.preset_jitter_mm / 1000.0,
                                                  np.deg2rad(self.cfg.preset_jitter_deg)))
        elif self.cfg.scene_kind == "crowded_goal":
            self.robot.reset_scene(self.rng, cluster_around=self.progress.goal_obj)
        else:
            self.robot.reset_scene(self.rng)

    # --- simulator faults (simulation.base.SimFault) ------------------------------------------
    def _faults_path(self) -> Path:
        return Path(self.logger.session_directory) / "faults.jsonl"

    def _record_faults(self, faults, doing: str) -> None:
        """One JSON line per fault in SESSION/faults.jsonl (fsynced) and a line on the terminal."""
        lines = [json.dumps({"iteration": self.progress.iteration, "trial": self.progress.trials_finished + 1,
                             "doing": doing, "kind": f.kind, "detail": f.detail}) + "\n" for f in faults]
        with open(self._faults_path(), "a") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        for f in faults:
            message = f"simulator fault at iteration {self.progress.iteration} ({doing}): {f.kind}: {f.detail}"
            if self._bar is not None and not self.cfg.verbose:
                self._bar.write(message)  # a fault is shown even without --verbose
            else:
                self._say(message)

    def _abort_trial(self, reason: str) -> None:
        """End the trial as aborted (evaluate.py leaves it out; a test run plays another) and
        start a new scene; too many faulty trials in a row stop the run."""
        ends = self.logger.trial_ends()
        if self.progress.iteration > (ends[-1] if ends else 0):  # a trial without a logged action is no trial
            self.logger.append("clearance", [self.progress.iteration])
            self.logger.append("aborted-trial", [self.progress.iteration])
            self.logger.sync()
        self._say(f"trial aborted at iteration {self.progress.iteration}: {reason}; a new scene")
        self._forget_trial()
        if self._video is not None:
            self._video.frames, self._video.durations = [], []
        self._faulty_trials_in_a_row += 1
        if self._faulty_trials_in_a_row >= MAX_FAULTY_SCENES:
            raise UserError(f"the simulator faulted in {self._faulty_trials_in_a_row} trials in a row; "
                            f"see {self._faults_path()}")
        self._new_scene()

    def _forget_trial(self) -> None:
        """Test learning (--test_learning) changes the nets within a trial only: every trial starts
        from the snapshot's weights and a fresh optimiser, so trials stay independent samples."""
        if self.trainer is not None and not self.training and self.cfg.test_learning:
            self.trainer.restore_snapshot()

    def _end_trial(self, reason: str) -> None:
        self._forget_trial()
        self.logger.append("clearance", [self.progress.iteration])
        self.progress.trials_finished += 1
        self._say(f"trial {self.progress.trials_finished} ended at iteration {self.progress.iteration}: {reason}")
        if self._bar is not None:
            self._bar.trial_done()

    def observe(self) -> Observation:
        return observe(self.robot, self.progress.goal_obj if self.goal_conditioned else None)

    def _say(self, line: str) -> None:
        if self._bar is None:
            print(line, flush=True)
        elif self.cfg.verbose:
            self._bar.write(line)

    def _make_bar(self):
        """A progress bar on a terminal (progress_bar.py): iteration or trial, recent goal grasp
        success, recent push reward, seconds per iteration, the time left when a limit is set."""
        import progress_bar

        return progress_bar.make(self.training, self.progress.iteration, self.progress.trials_finished,
                                 self.cfg.max_iterations, self.cfg.max_test_trials, self.goal_conditioned)

    def _update_bar(self, reward: float, primitive: str) -> None:
        if self._bar is not None:
            self._bar.iteration_done(self.progress.iteration, primitive, reward, self.progress.goal_successes)

    def run(self) -> None:
        self._bar = self._make_bar()
        try:
            self._loop()
            if self._video is not None and self._video.frames:  # stopped inside a trial: what it did
                trial = self.progress.trials_finished + 1
                path = self._video.end_trial(None, None, None, trial, "unfinished trial")
                self._say(f"video of the unfinished trial {trial}: {path}")
        finally:
            if self._bar is not None:
                self._bar.close()

    def _loop(self) -> None:
        cfg = self.cfg
        while not self._done():
            obs = self.observe()
            goal_visible = obs.goal_mask is None or bool(obs.goal_mask.any())
            goal_was_grasped = self.pending is not None and self._is_target(
                self.pending.grasp_success, self.pending.grasp_obj, self.pending.goal_obj)
            if self.goal_conditioned and self.training and goal_was_grasped and len(obs.masks) > 0:
                # Training goes on in the same scene with a new goal (SPEC 5 resets only when the
                # goal leaves the workspace); the label below then bootstraps from the new goal.
                self.progress.goal_obj = int(self.rng.choice(sorted(obs.masks)))
                obs.goal_mask = obs.masks[self.progress.goal_obj]
                goal_visible = True
            object_grasped = self.pending is not None and self.pending.grasp_success
            reset_reason = self._reset_reason(obs, goal_visible, goal_was_grasped, object_grasped)
            if reset_reason is not None and self.pending is None and self.test_case is not None:
                # Nothing was done in this preset scene yet: every trial would end the same way.
                raise UserError(f"preset case {self.cfg.test_preset_file} cannot start: {reset_reason}")
            push_q = grasp_q = None
            if self.trainer is not None and (reset_reason is None or (self.training and self.pending is not None)):
                # Stage grasp_only never pushes: its push trunks need not run.
                heads = ("grasp",) if cfg.stage == "grasp_only" else ("push", "grasp")
                push_q, grasp_q = self.trainer.forward(obs.color_heightmap, obs.depth_heightmap, obs.goal_mask,
                                                       heads=heads)
            lesson = None
            if self.pending is not None:
                lesson = self._label(self.pending, obs, push_q, grasp_q, goal_visible)
                self.pending = None
                # The labelling just counted this action's change (or not): check again.
                reset_reason = reset_reason or self._reset_reason(obs, goal_visible, goal_was_grasped, object_grasped)
            learn = functools.partial(self._learn_and_checkpoint, lesson) if lesson is not None else None
            if reset_reason is not None:
                if learn is not None:
                    learn()
                self._end_trial(reset_reason)
                if self._video is not None:
                    self._video_end(obs, reset_reason)
                if not self._done():
                    self._new_scene()
                continue
            if self._done():  # the last action is labelled; acting again would waste it
                if learn is not None:
                    learn()
                break
            self._act(obs, push_q, grasp_q, learn)
        if self.trainer is not None and self.training:
            self._snapshot()
        else:
            self._save_state()

    stop_requested = False  # set by Ctrl-C (main): stop once the action under way is labelled

    def _done(self) -> bool:
        cfg = self.cfg
        if self.stop_requested and self.pending is None:
            return True
        if cfg.max_iterations and self.progress.iteration >= cfg.max_iterations:
            return True
        return not self.training and self.progress.trials_finished >= cfg.max_test_trials

    def _is_target(self, grasp_success: bool, grasp_obj: int, goal_obj: int) -> bool:
        return rules.is_target_grasp(grasp_success, grasp_obj, goal_obj, self.goal_conditioned)

    def _reset_reason(self, obs: Observation, goal_visible: bool, goal_was_grasped: bool,
                      object_grasped: bool) -> str | None:
        p = self.progress
        return rules.reset_reason(self.training, self.goal_conditioned, self.robot.flown_off_objects(),
                                  utils.occupied_pixels(obs.depth_heightmap), p.no_change_count, goal_visible,
                                  goal_was_grasped, p.grasp_failures_in_a_row, self.cfg.max_goal_grasp_failures,
                                  object_grasped, p.iteration - p.trial_start_iteration, self.cfg.max_trial_actions)

    # --- choosing and acting ------------------------------------------------------------------
    def _choose(self, obs: Observation, push_q, grasp_q,
                best_goal_grasp_q: float) -> tuple[str, tuple[int, int, int], float, bool, bool]:
        """(primitive, action, predicted Q, is_exploit, use_heuristic) per stage (SPEC 5)."""
        cfg, p, rng = self.cfg, self.progress, self.rng
        if self.goal_conditioned:  # SPEC 5: goal-conditioned grasps land inside the goal mask
            grasp_allowed = obs.goal_mask > 0
            push_allowed = obs.push_allowed_near_goal
        else:
            grasp_allowed = obs.depth_heightmap > utils.OBJECT_HEIGHT_THRESHOLD_M
            push_allowed = obs.push_allowed
        if self.trainer is None:
            return self._choose_heuristic(obs, grasp_allowed, push_allowed)

        explored = False
        if cfg.stage == "grasp_only":
            primitive = "grasp"
        elif cfg.stage == "push_only":
            primitive = choose_primitive_push_only(best_goal_grasp_q, p.push_step, cfg.grasp_reward_threshold,
                                                   cfg.max_push_episode_length)
            if primitive == "push" and self.training and self.trainer.trains("push") and \
                    rng.random() < explore_probability(p.iteration, cfg.explore_rate_decay):
                # The paper's code is greedy here; an untrained push head then pushes the same
                # empty spot for hundreds of iterations (shared/reviews/...-stage2-probe.md).
                # Explore with the depth heuristic's push into an edge beside the goal instead, or
                # with any push the policy may choose (--push_explore_policy random).
                if cfg.push_explore_policy == "random":
                    action = random_push(learned_push_starts(push_allowed, cfg.push_end_margin_m,
                                                             cfg.heightmap_resolution), rng)
                    return primitive, action, float(push_q[action]), False, False
                action = utils.push_heuristic(obs.depth_heightmap, push_allowed)
                return primitive, action, float(push_q[action]), False, True
        else:
            if self.goal_conditioned:
                primitive = choose_primitive_goal_conditioned(best_goal_grasp_q, obs.goal_occupancy,
                                                              cfg.goal_grasp_q_threshold,
                                                              pushes_in_a_row=p.pushes_since_grasp,
                                                              max_pushes_before_grasp=cfg.max_pushes_before_grasp)
            else:
                primitive = choose_primitive_goal_agnostic(float(push_q.max()), float(grasp_q.max()), cfg.is_testing)
            # Epsilon-greedy as in VPG and the paper's code: only push_grasp explores, and it
            # explores the choice of primitive; the pixel is always the net's best.
            if rng.random() < explore_probability(p.iteration, cfg.explore_rate_decay, not self.training):
                primitive, explored = random_primitive(rng), True

        allowed = push_allowed if primitive == "push" else grasp_allowed
        q = push_q if primitive == "push" else grasp_q
        if cfg.heuristic_bootstrap and self.training and p.no_change_in_a_row[primitive] >= HEURISTIC_AFTER_NO_CHANGE:
            p.no_change_in_a_row[primitive] = 0
            action = (utils.push_heuristic if primitive == "push" else utils.grasp_heuristic)(obs.depth_heightmap, allowed)
            return primitive, action, float(q[action]), False, True
        if primitive == "grasp" and cfg.grasp_explore and self.training and \
                rng.random() < grasp_explore_probability(p.iteration, cfg.explore_rate_decay):
            # Stage 1's exploration (paper README): the goal-agnostic explore model's best grasp
            # inside the goal mask.
            if cfg.grasp_explore_policy == "heuristic":
                action = utils.grasp_heuristic(obs.depth_heightmap, allowed)
                return primitive, action, float(q[action]), False, True
            explore_q = self.trainer.explore_grasp_q(obs.color_heightmap, obs.depth_heightmap)
            action, _ = best_pixel(explore_q, allowed if allowed.any() else None)
            return primitive, action, float(q[action]), False, False
        if primitive == "push" and allowed.any():
            allowed = learned_push_starts(allowed, cfg.push_end_margin_m, cfg.heightmap_resolution)
        action, value = best_pixel(q, allowed if allowed.any() else None)
        return primitive, action, value, not explored, False

    def _choose_heuristic(self, obs: Observation, grasp_allowed, push_allowed):
        """--policy heuristic: grasp inside the goal mask, push when the goal is crowded."""
        primitive = "grasp"
        if self.goal_conditioned and self.cfg.stage != "grasp_only":  # grasp_only: the heuristic's grasp alone
            occupancy = obs.goal_occupancy
            near_goal = obs.free_near_goal if obs.free_near_goal is not None else np.zeros_like(push_allowed)
            if occupancy > GOAL_OCCUPANCY_THRESHOLD and self.progress.no_change_in_a_row["push"] < 2:
                action = utils.push_heuristic(obs.depth_heightmap, near_goal)
                if near_goal[action[1], action[2]]:
                    return "push", action, 0.0, True, True
        elif self.progress.no_change_in_a_row["grasp"] >= 2:
            return "push", utils.push_heuristic(obs.depth_heightmap, push_allowed), 0.0, True, True
        return primitive, utils.grasp_heuristic(obs.depth_heightmap, grasp_allowed), 0.0, True, True

    def _act(self, obs: Observation, push_q, grasp_q, learn=None) -> None:
        """Choose and execute the next action; `learn` (the previous action's lesson, or None) runs
        meanwhile. The action is chosen from Q maps computed before that lesson either way, and
        neither the physics nor the lesson reads what the other writes, so overlapping the two
        changes no label (tests/test_main.py compares both ways)."""
        cfg, p = self.cfg, self.progress
        best_goal_grasp_q = masked_max(grasp_q, obs.goal_mask) if (grasp_q is not None and self.goal_conditioned) else 0.0
        primitive, action, predicted, is_exploit, use_heuristic = self._choose(obs, push_q, grasp_q, best_goal_grasp_q)
        if cfg.save_visualizations:
            self._visualize(obs, primitive, action, push_q, grasp_q)
        iteration = p.iteration

        def execute() -> tuple[bool, int]:
            self.logger.save_images(iteration, obs.color_image, obs.depth_image, "0")
            self.logger.save_heightmaps(iteration, obs.color_heightmap, obs.depth_heightmap, "0")
            with sim_fault(self.robot.backend, iteration):
                if primitive == "push":
                    self.robot.push(action, obs.depth_heightmap)
                    return False, -1
                result = self.robot.grasp(action, obs.depth_heightmap)
                return result.success, result.object_index

        if learn is None:
            grasp_success, grasp_obj = execute()
        elif self.overlap_learning:
            # MuJoCo's mj_step and torch's kernels release the GIL, so the two run on both cores.
            physics = self._physics_thread().submit(execute)
            try:
                learn()
            finally:
                concurrent.futures.wait([physics])  # never leave the arm moving behind an error
            grasp_success, grasp_obj = physics.result()
        else:
            learn()
            grasp_success, grasp_obj = execute()
        faults = self.robot.take_faults()
        if faults:  # the action is no transition: nothing of it is logged or learned
            self._record_faults(faults, f"{primitive} at {tuple(int(v) for v in action)}")
            self._abort_trial(f"simulator fault ({', '.join(sorted({f.kind for f in faults}))})")
            return
        self._faulty_trials_in_a_row = 0
        if primitive == "push":
            p.push_step += 1
        p.pushes_since_grasp = p.pushes_since_grasp + 1 if primitive == "push" else 0
        if self.trainer is not None and self.training and obs.goal_mask is not None:
            # With the heightmaps, what a resume needs to rebuild this transition and its relabelling.
            self.logger.save_mask(p.iteration, "goal", obs.goal_mask)
            if grasp_success and grasp_obj in obs.masks:
                self.logger.save_mask(p.iteration, "grasped", obs.masks[grasp_obj])
        goal_grasped = self._is_target(grasp_success, grasp_obj, p.goal_obj)
        self._say(f"iteration {p.iteration}: {primitive} at rot {action[0]} (row {action[1]}, col {action[2]}) "
                  f"Q {predicted:.3f}{' explore' if not is_exploit else ''}{' heuristic' if use_heuristic else ''}"
                  + (f" -> {'grasped object ' + str(grasp_obj) if grasp_success else 'missed'}"
                     f"{' (goal)' if goal_grasped and self.goal_conditioned else ''}" if primitive == "grasp" else ""))
        if self._video is not None:
            self._video.action(obs.color_image, obs.color_heightmap, obs.depth_heightmap, obs.goal_mask, primitive,
                               action, f"iteration {p.iteration}: {primitive}"
                               + (f" Q {predicted:.2f}" if self.trainer is not None else " (heuristic)")
                               + (f" -> {'grasped ' + str(grasp_obj) if grasp_success else 'missed'}"
                                  f"{' (goal)' if goal_grasped and self.goal_conditioned else ''}"
                                  if primitive == "grasp" else ""))
        self.pending = Pending(obs, primitive, action, predicted, is_exploit, use_heuristic, grasp_success,
                               grasp_obj, p.goal_obj, p.push_step, p.episode, best_goal_grasp_q, obs.goal_occupancy)
        if primitive == "grasp":
            if self.goal_conditioned:
                p.grasp_failures_in_a_row = 0 if goal_grasped else p.grasp_failures_in_a_row + 1
                p.goal_successes = (p.goal_successes + [int(goal_grasped)])[-100:]
            else:
                p.grasp_failures_in_a_row = 0 if grasp_success else p.grasp_failures_in_a_row + 1
                p.goal_successes = (p.goal_successes + [int(grasp_success)])[-100:]
            if cfg.stage == "push_only":  # a grasp ends the push episode
                p.push_step = 0
                p.episode += 1

    # --- labels and learning --------------------------------------------------------------------
    def _label(self, pending: Pending, obs: Observation, push_q, grasp_q, goal_visible: bool) -> "Lesson":
        """Measure the previous action's outcome on this observation, log its row, count it; what is
        left to learn from it is returned (`_learn`)."""
        cfg, p = self.cfg, self.progress
        if self.goal_conditioned:
            change, change_pixels = utils.goal_change_detected(
                pending.obs.depth_heightmap, obs.depth_heightmap, pending.obs.goal_mask)
            # The goal mask of the state being labelled, applied to the next state's maps.
            next_goal_mask = obs.goal_mask
        else:
            change, change_pixels = utils.agnostic_change_detected(
                pending.obs.depth_heightmap, obs.depth_heightmap, pending.grasp_success)
            next_goal_mask = None
        has_next = grasp_q is not None
        next_goal_grasp_max = masked_max(grasp_q, next_goal_mask) if has_next and next_goal_mask is not None else None
        occupancy_now = obs.goal_occupancy
        goal_grasped = self._is_target(pending.grasp_success, pending.grasp_obj, pending.goal_obj)
        outcome = rules.measure_outcome(
            pending.primitive, pending.grasp_success, goal_grasped, change, pending.best_goal_grasp_q_before,
            pending.occupancy_before, occupancy_now, float(push_q.max()) if push_q is not None else None,
            float(grasp_q.max()) if has_next else None, next_goal_grasp_max, self.goal_conditioned, goal_visible)
        improved, decreased_occupancy = outcome.improved_grasp_q, outcome.decreased_occupancy
        next_goal_grasp_max = next_goal_grasp_max or 0.0
        reward, label = reward_and_label(self.reward_stage, pending.primitive, outcome,
                                         cfg.future_reward_discount, cfg.alternating_training,
                                         push_reward=cfg.push_reward,
                                         alternating_grasp_labels=cfg.alternating_grasp_labels)
        p.no_change_count, p.no_change_in_a_row = rules.count_change(
            p.no_change_count, p.no_change_in_a_row, pending.primitive, change)

        log = self.logger
        row = {
            "executed-action": [PRIMITIVE_CODE[pending.primitive], *pending.action],
            "label-value": [label], "reward-value": [reward], "predicted-value": [pending.predicted],
            "is-exploit": [int(pending.is_exploit)], "use-heuristic": [int(pending.use_heuristic)],
            "grasp-obj": [pending.grasp_obj], "goal-obj": [pending.goal_obj],
            "grasp-success": [int(pending.grasp_success)], "push-step": [pending.push_step],
            "episode": [pending.episode], "change-detected": [int(change), change_pixels],
            "improved-grasp-reward": [improved], "occupancy": [pending.occupancy_before, occupancy_now],
        }
        assert tuple(row) == PER_ITERATION_LOGS  # executed-action first: it counts the iterations
        for name, values in row.items():
            log.append(name, values)
        p.iteration += 1
        self._update_bar(reward, pending.primitive)
        it = p.iteration
        if pending.primitive == "grasp" and p.goal_successes:
            self._scalar("grasp/goal_success_rate_last100" if self.goal_conditioned else "grasp/success_rate_last100",
                         float(np.mean(p.goal_successes)), it)
        if pending.primitive == "push":
            self._scalar("push/improved_grasp_reward", improved, it)
            self._scalar("push/decreased_occupancy", decreased_occupancy, it)
        self._scalar(f"{pending.primitive}/reward", reward, it)
        return Lesson(pending, label, reward, goal_grasped, next_goal_grasp_max)

    def _learn_and_checkpoint(self, lesson: "Lesson") -> None:
        self._learn(lesson)
        if self.progress.iteration % self.cfg.snapshot_interval == 0:
            self._snapshot()
        self._save_progress()
        kill_point("between_actions", self.progress.iteration)

    def _learn(self, lesson: "Lesson") -> None:
        """Back-propagate the labelled action, remember it, relabel it, replay (SPEC 5, 7)."""
        cfg = self.cfg
        pending, label, reward, goal_grasped = lesson.pending, lesson.label, lesson.reward, lesson.goal_grasped
        next_goal_grasp_max, it = lesson.next_goal_grasp_max, self.progress.iteration
        if self.trainer is None or (not self.training and not cfg.test_learning):
            return
        state = pending.obs
        loss = self.trainer.backprop(state.color_heightmap, state.depth_heightmap, state.goal_mask,
                                     pending.primitive, pending.action, label)
        if not self.training:  # test learning: the trial's own lesson only, no replay, nothing stored
            return
        if loss is not None:
            self._scalar(f"train/{pending.primitive}_loss", loss, it)
        transition = Transition(state.color_heightmap, state.depth_heightmap, state.goal_mask,
                                pending.primitive, pending.action, label, reward, pending.predicted, it - 1)
        self.trainer.remember(transition)
        if cfg.stage == "grasp_only" and self.goal_conditioned and cfg.goal_relabelling and pending.grasp_success \
                and not goal_grasped and pending.grasp_obj in state.masks:
            # Goal relabelling (SPEC 5): the grasped object was a fine goal for this very grasp.
            # The grasped object is gone from the next state; training continues with the current goal there.
            relabelled = relabel_grasp_transition(transition, state.masks[pending.grasp_obj],
                                                  next_goal_grasp_max, cfg.future_reward_discount)
            self.trainer.backprop(relabelled.color_heightmap, relabelled.depth_heightmap, relabelled.goal_mask,
                                  "grasp", relabelled.action, relabelled.label)
            self.trainer.remember(relabelled)
        if cfg.experience_replay:
            losses = []
            for _ in range(cfg.replay_steps):
                replayed = self.trainer.replay(pending.primitive, reward, self.rng)
                if replayed is None:
                    break
                losses.append(replayed.loss)
            if losses:
                self._scalar(f"train/{pending.primitive}_replay_loss", float(np.mean(losses)), it)

    def _scalar(self, tag: str, value: float, iteration: int) -> None:
        if tag not in TENSORBOARD_SCALARS:  # a new scalar is named in the table (and the README) first
            raise AssertionError(f"TensorBoard scalar {tag!r} is not in main.TENSORBOARD_SCALARS")
        self.logger.scalar(tag, value, iteration)

    def _snapshot(self) -> None:
        if self.trainer is None or not self.training:
            return
        it, stage = self.progress.iteration, self.cfg.stage
        self.logger.save_snapshot(it, stage, self.trainer.save_snapshot)
        self.logger.save_snapshot(None, stage, self.trainer.save_snapshot)
        self._save_state()

    def _visualize(self, obs: Observation, primitive: str, action, push_q, grasp_q) -> None:
        it = self.progress.iteration
        if push_q is not None:
            self.logger.save_visualization(it, "push", utils.affordance_grid(push_q, obs.color_heightmap, action if primitive == "push" else None))
        if grasp_q is not None:
            self.logger.save_visualization(it, "grasp", utils.affordance_grid(grasp_q, obs.color_heightmap, action if primitive == "grasp" else None))
        self.logger.save_visualization(it, "action", utils.draw_action(obs.color_heightmap, primitive, action, obs.goal_mask))

    def _video_end(self, obs: Observation, reason: str) -> None:
        trial = self.progress.trials_finished  # numbered from 1, as the line _end_trial prints
        path = self._video.end_trial(obs.color_image, obs.color_heightmap, obs.goal_mask, trial,
                                     f"trial {trial} ended at iteration {self.progress.iteration}: {reason}")
        if path is not None:
            self._say(f"video of trial {trial}: {path}")

    def _physics_thread(self) -> "concurrent.futures.ThreadPoolExecutor":
        if self._physics is None:
            self._physics = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="physics")
        return self._physics

    def close(self) -> None:
        if self._physics is not None:
            self._physics.shutdown(wait=True)
        self.robot.close()
        self.logger.close()


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"cannot save {type(value).__name__} in progress.json")


def _on_stop_signals(handler) -> dict:
    """Install handler for SIGINT and SIGTERM (not where they are ignored, as in a background
    job, nor outside the main thread); returns the handlers to restore."""
    import signal

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
        except ValueError:
            pass
    return previous


def main(argv: list[str] | None = None) -> int:
    import signal

    cfg = parse_config(argv)
    runner = None

    def stop(signum, frame):
        # The first Ctrl-C lets the action under way finish and be logged, then saves and exits 0;
        # a second one stops at once (the newest snapshot and the logs still resume exactly).
        if runner is None or runner.stop_requested:
            raise KeyboardInterrupt
        runner.stop_requested = True
        print("\nstopping after this action (again to stop at once)", file=sys.stderr, flush=True)

    previous = _on_stop_signals(stop)
    try:
        runner = Runner(cfg)
        runner.run()
        if runner.stop_requested:
            print(f"stopped at iteration {runner.progress.iteration}, state saved; resume with --continue_logging "
                  f"--logging_directory {runner.logger.session_directory}", file=sys.stderr)
            return 0
        if cfg.is_testing:
            import evaluate

            # Goal-oriented trials end at the goal; goal-agnostic ones are VPG clearance runs.
            num_obj_complete = 1 if cfg.is_goal_conditioned else cfg.num_obj
            print(evaluate.format_report(evaluate.evaluate_session(
                runner.logger.session_directory, num_obj_complete=num_obj_complete,
                max_goal_grasp_failures=cfg.max_goal_grasp_failures)))
        print(f"session directory: {runner.logger.session_directory}")
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if runner is not None:
            print(f"\nstopped at once; resume with --continue_logging --logging_directory "
                  f"{runner.logger.session_directory}", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if runner is not None:
            runner.close()


if __name__ == "__main__":
    sys.exit(main())
