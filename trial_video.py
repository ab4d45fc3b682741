"""--save_video: one GIF or MP4 per trial, from the simulator's (or the real cell's) camera.

Each action gives one frame: on the left the camera image before the action with the action
drawn where the arm goes (a push as a red arrow along its 13 cm path, a grasp as a green bar
across the open jaw, both projected from the motion plan robot.py executes), on the right the
colour heightmap the net saw, the goal outlined in magenta and the action drawn again
(utils.draw_action); a caption says the action and its outcome. The trial's last frame is the
scene when it ended, with the reason. Files: ``<session>/videos/trial-NNN.gif`` (or ``.mp4``),
written whole or not at all.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import utils
from robot import plan_grasp, plan_push

FRAME_SECONDS = 0.8  # each action's frame is shown this long
LAST_FRAME_SECONDS = 2.0
MAX_FRAMES = 400  # a trial longer than this keeps its first frames and its last one
CAMERA_SCALE = 0.5  # 640 x 480 camera images are drawn at 320 x 240
CAPTION_PX = 22
FORMATS = ("gif", "mp4")


def project(points_m: np.ndarray, intrinsics: np.ndarray, camera_pose: np.ndarray) -> np.ndarray:
    """(N, 3) base-frame points -> (N, 2) camera pixels (x right, y down)."""
    points = np.asarray(points_m, float).reshape(-1, 3)
    world_to_camera = np.linalg.inv(camera_pose)
    camera = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    z = np.maximum(camera[:, 2], 1e-6)
    return np.stack([intrinsics[0, 0] * camera[:, 0] / z + intrinsics[0, 2],
                     intrinsics[1, 1] * camera[:, 1] / z + intrinsics[1, 2]], axis=1)


def draw_action_on_camera(color_image: np.ndarray, primitive: str, action: tuple[int, int, int],
                          depth_heightmap: np.ndarray, intrinsics: np.ndarray, camera_pose: np.ndarray,
                          workspace_limits_m: np.ndarray = utils.WORKSPACE_LIMITS_M,
                          resolution_m: float = utils.HEIGHTMAP_RESOLUTION_M) -> np.ndarray:
    """The camera image with the action's motion plan drawn where the gripper goes. RGB uint8."""
    import cv2

    image = np.ascontiguousarray(color_image.copy())
    depth = np.nan_to_num(depth_heightmap, nan=0.0)
    theta = action[0] * utils.ROTATION_STEP_RAD
    if primitive == "push":
        plan = plan_push(action, depth, workspace_limits_m, resolution_m)
        start, end = project(np.stack([plan.start_m, plan.end_m]), intrinsics, camera_pose)
        cv2.arrowedLine(image, _pt(start), _pt(end), (255, 0, 0), 3, tipLength=0.2)
    else:
        plan = plan_grasp(action, depth, workspace_limits_m, resolution_m)
        half = 0.04 * np.array([np.cos(theta), np.sin(theta), 0.0])  # the open jaw closes along theta
        a, b, centre = project(np.stack([plan.position_m - half, plan.position_m + half, plan.position_m]),
                               intrinsics, camera_pose)
        cv2.line(image, _pt(a), _pt(b), (0, 255, 0), 3)
        cv2.circle(image, _pt(centre), 5, (0, 255, 0), -1)
    return image


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def outline_goal(color_heightmap: np.ndarray, goal_mask: np.ndarray | None, thickness: int = 2) -> np.ndarray:
    """A copy of the colour heightmap with the goal's outline in magenta (visible in a small frame)."""
    import cv2

    image = np.ascontiguousarray(color_heightmap.copy())
    if goal_mask is not None and goal_mask.any():
        contours, _ = cv2.findContours((goal_mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, (255, 0, 255), thickness)
    return image


def compose_frame(camera_rgb: np.ndarray, heightmap_rgb: np.ndarray, caption: str) -> np.ndarray:
    """[camera (scaled) | heightmap (padded to the same height)] over a caption bar. RGB uint8."""
    import cv2

    h = int(round(camera_rgb.shape[0] * CAMERA_SCALE))
    w = int(round(camera_rgb.shape[1] * CAMERA_SCALE))
    camera = cv2.resize(camera_rgb, (w, h), interpolation=cv2.INTER_AREA)
    hm = heightmap_rgb
    if hm.shape[0] > h:
        hm = cv2.resize(hm, (int(hm.shape[1] * h / hm.shape[0]), h), interpolation=cv2.INTER_AREA)
    pad_top = (h - hm.shape[0]) // 2
    column = np.full((h, hm.shape[1] + 16, 3), 255, dtype=np.uint8)
    column[pad_top:pad_top + hm.shape[0], 8:8 + hm.shape[1]] = hm
    frame = np.concatenate([camera, column], axis=1)
    bar = np.full((CAPTION_PX, frame.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, caption[:90], (6, CAPTION_PX - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    frame = np.concatenate([frame, bar], axis=0)
    # Even sizes: video encoders need them.
    return np.ascontiguousarray(frame[:frame.shape[0] // 2 * 2, :frame.shape[1] // 2 * 2])


def write_video(path: str | os.PathLike, frames: list[np.ndarray], durations_s: list[float]) -> Path:
    """Write frames (RGB uint8, one size) as a GIF (imageio) or MP4 (OpenCV, mp4v) by the file's
    extension; to a temporary file renamed into place, so a reader never sees half a video."""
    path = Path(path)
    if not frames:
        raise ValueError("a video needs at least one frame")
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        import imageio.v3 as iio

        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=[int(1000 * d) for d in durations_s], loop=0)
    elif path.suffix == ".mp4":
        import cv2

        fps = 1.0 / min(durations_s)  # each frame repeated to last its duration
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write MP4 here ({tmp})")
        try:
            for frame, duration in zip(frames, durations_s):
                for _ in range(max(int(round(duration * fps)), 1)):
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    else:
        raise ValueError(f"video format {path.suffix!r}: use one of {', '.join('.' + f for f in FORMATS)}")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class TrialVideo:
    """Collects one trial's frames; main.py calls action() after each action, end_trial() at its end."""

    def __init__(self, directory: str | os.PathLike, intrinsics: np.ndarray, camera_pose: np.ndarray,
                 workspace_limits_m: np.ndarray = utils.WORKSPACE_LIMITS_M,
                 resolution_m: float = utils.HEIGHTMAP_RESOLUTION_M, video_format: str = "gif") -> None:
        if video_format not in FORMATS:
            raise ValueError(f"video format {video_format!r}: use one of {', '.join(FORMATS)}")
        self.directory = Path(directory)
        self.intrinsics, self.camera_pose = np.asarray(intrinsics, float), np.asarray(camera_pose, float)
        self.workspace_limits_m, self.resolution_m = np.asarray(workspace_limits_m, float), resolution_m
        self.video_format = video_format
        self.frames: list[np.ndarray] = []
        self.durations: list[float] = []

    def action(self, color_image: np.ndarray, color_heightmap: np.ndarray, depth_heightmap: np.ndarray,
               goal_mask: np.ndarray | None, primitive: str, action: tuple[int, int, int], caption: str) -> None:
        if len(self.frames) >= MAX_FRAMES:
            return
        camera = draw_action_on_camera(color_image, primitive, action, depth_heightmap, self.intrinsics,
                                       self.camera_pose, self.workspace_limits_m, self.resolution_m)
        heightmap = utils.draw_action(outline_goal(color_heightmap, goal_mask), primitive, action, goal_mask)
        self.frames.append(compose_frame(camera, heightmap, caption))
        self.durations.append(FRAME_SECONDS)

    def end_trial(self, color_image: np.ndarray | None, color_heightmap: np.ndarray | None,
                  goal_mask: np.ndarray | None, trial_index: int, caption: str) -> Path | None:
        """Add the final scene (when given: a run stopped mid-trial has none), write the trial's
        video, start afresh; the path, or None if the trial had no action (nothing to show)."""
        frames, durations = self.frames, self.durations
        self.frames, self.durations = [], []
        if not frames:
            return None
        if color_image is not None and color_heightmap is not None:
            frames.append(compose_frame(color_image, outline_goal(color_heightmap, goal_mask), caption))
            durations.append(LAST_FRAME_SECONDS)
        else:
            durations[-1] = LAST_FRAME_SECONDS
        return write_video(self.directory / f"trial-{trial_index:03d}.{self.video_format}", frames, durations)
