"""Command line: describe the cell and solve the camera pose from a marker held by the tool.

    python -m real.calibrate --robot_ip 192.168.1.10 --marker checkerboard
    python -m real.calibrate --cell_only --record_home --bin_position_m -0.5 0.4 0.25   # the cell file only
    python -m real.calibrate --dry_run                 # synthetic robot + camera, no hardware
    python -m real.calibrate --check                   # verify saved files against the empty table

The cell file (real/cell.json: workspace box, table height, bin, home, tool offset, gripper yaw
offset) is read if it exists, changed by the options given, and written with the calibration;
`main.py --real` reads it. See real/README.md for the procedure. Exit codes: 0 done, 1 dry-run
recovery out of tolerance (or a failed --check), 2 user error (message on one line).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from utils import UserError

from real import calibration
from real.arm import RTDE_PORT
from real.camera import nominal_intrinsics
from real.cell import CELL_FILE, Cell, check_cell, load_cell, save_cell, updated
from real.motion import MotionConfig, SafetyEnvelope, home_waypoint, tcp_pose

# The dry run's ground truth: a camera behind and above the workspace looking at its centre.
DRY_RUN_EYE_M = (-1.05, 0.08, 0.55)
DRY_RUN_TARGET_M = (-0.5, 0.0, 0.0)
DRY_RUN_DEPTH_SCALE = 1.012
DRY_RUN_TOLERANCE = (0.5, 0.002)  # deg, m


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m real.calibrate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dry_run", action="store_true", help="simulate robot, marker and camera; connect to nothing")
    parser.add_argument("--check", action="store_true", help="check saved calibration files against the empty table")
    parser.add_argument("--robot_ip", default="192.168.1.10", help="UR controller address")
    parser.add_argument("--connect_timeout_s", type=float, default=2.0)
    parser.add_argument("--rtde_port", type=int, default=RTDE_PORT, help="probed before ur-rtde connects")
    parser.add_argument("--marker", choices=("checkerboard", "aruco"), default="checkerboard")
    parser.add_argument("--inner_corners", type=int, nargs=2, default=(3, 3), metavar=("COLS", "ROWS"),
                        help="checkerboard inner corners (odd x odd: the middle one is the centre)")
    parser.add_argument("--aruco_dictionary", default="DICT_4X4_50")
    parser.add_argument("--aruco_id", type=int, default=0)
    parser.add_argument("--square_size_m", type=float, default=0.02,
                        help="checkerboard square side (ArUco: a quarter of the marker side); synthetic views only")
    parser.add_argument("--marker_offset_m", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"),
                        help="marker centre in the TCP (fingertip) frame, m")
    cell = parser.add_argument_group("the cell file (defaults: the existing file's values, else real.cell.Cell's)")
    cell.add_argument("--cell", type=Path, default=None,
                      help=f"the cell file to read and write (default: OUTPUT_DIR/{CELL_FILE})")
    cell.add_argument("--cell_only", action="store_true",
                      help="write the cell file from the options (and --record_home) and stop: no calibration")
    cell.add_argument("--record_home", action="store_true",
                      help="take the arm's current joints and TCP pose as the home (jog it out of the camera's view "
                           "first, tool pointing down)")
    cell.add_argument("--workspace_xy_m", type=float, nargs=4, default=None, metavar=("XMIN", "XMAX", "YMIN", "YMAX"))
    cell.add_argument("--table_z_m", type=float, default=None, help="table surface height in the base frame")
    cell.add_argument("--workspace_height_m", type=float, default=None)
    cell.add_argument("--tool_offset_m", type=float, default=None, help="flange -> fingertip distance, m (2F-85: 0.175)")
    cell.add_argument("--gripper_yaw_offset_rad", type=float, default=None)
    cell.add_argument("--bin_position_m", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"))
    cell.add_argument("--bin_yaw_rad", type=float, default=None)
    cell.add_argument("--home_joints_rad", type=float, nargs=6, default=None, metavar="Q",
                      help="home joints (give --home_tcp_pose with them, or use --record_home)")
    cell.add_argument("--home_tcp_pose", type=float, nargs=6, default=None, metavar="P",
                      help="the fingertip TCP pose [x y z rx ry rz] of the home joints")
    parser.add_argument("--tool_rotvec", type=float, nargs=3, default=None, metavar=("RX", "RY", "RZ"),
                        help="TCP orientation during calibration (default: tool pointing down, yaw 0)")
    parser.add_argument("--grid", type=int, nargs=3, default=(3, 3, 3), metavar=("NX", "NY", "NZ"))
    parser.add_argument("--heights_m", type=float, nargs=2, default=(0.05, 0.25), metavar=("LOW", "HIGH"),
                        help="marker heights above the table")
    parser.add_argument("--margin_m", type=float, default=0.05, help="grid inset from the workspace's xy edges")
    parser.add_argument("--speed_m_s", type=float, default=0.1)
    parser.add_argument("--acceleration_m_s2", type=float, default=0.5)
    parser.add_argument("--settle_s", type=float, default=0.5, help="wait after each move before grabbing a frame")
    parser.add_argument("--camera_width", type=int, default=None, help="1280 (default real) or 640 (default dry run)")
    parser.add_argument("--camera_height", type=int, default=None)
    parser.add_argument("--camera_serial", default=None)
    parser.add_argument("--no_scale", action="store_true", help="do not estimate a depth scale (keep 1.0)")
    parser.add_argument("--output_dir", type=Path, default=None,
                        help=f"where to write the files (real run default: {calibration.DEFAULT_CALIBRATION_DIR}; "
                             "dry run: nothing is written unless given)")
    parser.add_argument("--noise_mm", type=float, default=1.0, help="dry run: depth noise, mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation before moving the robot")
    return parser


def dry_run_truth(seed: int) -> np.ndarray:
    """A camera pose the solver does not know: look-at plus a small random rotation."""
    rng = np.random.default_rng(seed)
    pose = calibration.look_at_pose(np.array(DRY_RUN_EYE_M), np.array(DRY_RUN_TARGET_M))
    pose[:3, :3] = pose[:3, :3] @ Rotation.from_rotvec(rng.normal(0.0, 0.02, 3)).as_matrix()
    return pose


def cell_path(args: argparse.Namespace) -> Path | None:
    """Where the cell file is read from and written to (None: a dry run that writes nothing)."""
    if args.cell is not None:
        return args.cell
    directory = args.output_dir if (args.output_dir is not None or args.dry_run) else calibration.DEFAULT_CALIBRATION_DIR
    return None if directory is None else Path(directory) / CELL_FILE


def cell_from_args(args: argparse.Namespace) -> Cell:
    """The existing cell file (or the defaults), changed by the options given."""
    path = cell_path(args)
    cell = load_cell(path) if path is not None and path.exists() else Cell()
    xy = args.workspace_xy_m
    if (args.home_joints_rad is None) != (args.home_tcp_pose is None):
        raise UserError("--home_joints_rad and --home_tcp_pose go together (or use --record_home)")
    cell = updated(cell, workspace_xy_m=None if xy is None else [xy[:2], xy[2:]], table_z_m=args.table_z_m,
                   workspace_height_m=args.workspace_height_m, tool_offset_m=args.tool_offset_m,
                   gripper_yaw_offset_rad=args.gripper_yaw_offset_rad, bin_position_m=args.bin_position_m,
                   bin_yaw_rad=args.bin_yaw_rad, home_joints_rad=args.home_joints_rad, home_tcp_pose=args.home_tcp_pose)
    return check_cell(cell, str(path or "(options)"))


def run(args: argparse.Namespace) -> int:
    from real.arm import DryRunArm, RTDEArm

    cell = cell_from_args(args)
    tool_rotvec = np.asarray(args.tool_rotvec if args.tool_rotvec is not None else tcp_pose(np.zeros(3), 0.0)[3:])
    tool_down = Rotation.from_rotvec(tool_rotvec).as_matrix()[2, 2] < -np.cos(np.deg2rad(1.0))
    envelope = SafetyEnvelope(cell.workspace_limits_m, max_speed_m_s=0.25, max_acceleration_m_s2=1.2,
                              tool_offset_m=cell.tool_offset_m, require_tool_down=tool_down)
    width = args.camera_width or (640 if args.dry_run else 1280)
    height = args.camera_height or (480 if args.dry_run else 720)
    detector = calibration.make_detector(args.marker, tuple(args.inner_corners), args.aruco_dictionary, args.aruco_id)
    if args.check:
        return check(args, cell, width, height)
    if args.cell_only:
        if args.record_home:
            cell = record_home(args, cell)
        return write_cell(args, cell)
    points = calibration.calibration_grid(cell.workspace_limits_m, tuple(args.grid), tuple(args.heights_m),
                                          args.margin_m)
    print(f"{len(points)} positions, marker '{args.marker}', TCP rotation vector {np.round(tool_rotvec, 4).tolist()}")

    if args.dry_run:
        truth = dry_run_truth(args.seed)
        arm = DryRunArm(envelope)
        camera = calibration.SyntheticMarkerCamera(
            arm, nominal_intrinsics(width, height), truth, width, height, args.marker, args.square_size_m,
            args.marker_offset_m, DRY_RUN_DEPTH_SCALE, args.noise_mm / 1000.0, cell.table_z_m, args.seed)
        settle = None
    else:
        from real.camera import RealSenseCamera

        if not args.yes:
            input(f"The robot at {args.robot_ip} will go home, then move through {len(points)} positions inside the "
                  "workspace at {:.2f} m/s. Clear the table, keep the e-stop at hand, press Enter (Ctrl-C aborts): "
                  .format(args.speed_m_s))
        camera = RealSenseCamera(width, height, serial=args.camera_serial)  # first: no motion without a camera
        try:
            arm = RTDEArm(args.robot_ip, envelope, args.connect_timeout_s, args.rtde_port)
            arm.set_tool_offset(cell.tool_offset_m)
            if args.record_home:
                cell = home_from_arm(arm, cell)
        except BaseException:
            camera.close()
            raise

        def settle() -> None:
            time.sleep(args.settle_s)
            for _ in range(3):  # frames queued while moving show the old position: drop them
                camera.get_frames()

    try:
        # Home first: a known start, out of the way, and the home checked by the controller too.
        home = home_waypoint(MotionConfig(cell=cell))
        arm.check([home])
        arm.move_joints(home)
        camera_points, base_points = calibration.collect_pairs(
            arm, camera, points, tool_rotvec, np.asarray(args.marker_offset_m), detector, args.speed_m_s,
            args.acceleration_m_s2, settle)
    finally:
        arm.disconnect()
        getattr(camera, "close", lambda: None)()

    result = calibration.solve_camera_pose(camera_points, base_points, estimate_scale=not args.no_scale)
    print(f"{len(camera_points)}/{len(points)} detections; RMS residual {result.rms_m * 1000:.2f} mm, "
          f"max {result.residuals_m.max() * 1000:.2f} mm; depth scale {result.depth_scale:.4f}")
    print("camera pose (camera-to-base):")
    print(np.array2string(result.camera_pose, precision=5, suppress_small=True))
    if result.rms_m > 0.005:
        print("warning: RMS above 5 mm: check the marker offset, the marker's flatness and the detections")
    output_dir = args.output_dir if (args.output_dir is not None or args.dry_run) else calibration.DEFAULT_CALIBRATION_DIR
    if output_dir is not None:
        for path in calibration.save_calibration(result, output_dir, camera_points, base_points):
            print(f"wrote {path}")
        write_cell(args, cell)
    if args.dry_run:
        rotation_deg, translation_m = calibration.pose_error(result.camera_pose, truth)
        ok = rotation_deg < DRY_RUN_TOLERANCE[0] and translation_m < DRY_RUN_TOLERANCE[1]
        print(f"dry run: rotation error {rotation_deg:.3f} deg, translation error {translation_m * 1000:.2f} mm, "
              f"depth scale {result.depth_scale:.4f} (true {DRY_RUN_DEPTH_SCALE}) -> "
              f"{'recovered' if ok else 'NOT recovered'} (tolerance {DRY_RUN_TOLERANCE[0]} deg, "
              f"{DRY_RUN_TOLERANCE[1] * 1000:.0f} mm)")
        return 0 if ok else 1
    return 0


def write_cell(args: argparse.Namespace, cell: Cell) -> int:
    path = cell_path(args)
    if path is None:
        print("dry run: no cell file written (give --output_dir or --cell)")
        return 0
    save_cell(cell, path)
    print(f"wrote {path}")
    return 0


def home_from_arm(arm, cell: Cell) -> Cell:
    """The arm's joints and TCP pose now (the TCP already set to the cell's tool offset) as home."""
    joints, pose = arm.joints(), arm.tcp_pose()
    print(f"home: joints {np.round(np.degrees(joints), 2).tolist()} deg, TCP {np.round(pose, 4).tolist()}")
    return updated(cell, home_joints_rad=joints, home_tcp_pose=pose)


def record_home(args: argparse.Namespace, cell: Cell) -> Cell:
    from real.arm import RTDEArm

    if args.dry_run:
        print("dry run: --record_home keeps the cell's home (no arm to read)")
        return cell
    arm = RTDEArm(args.robot_ip, SafetyEnvelope(cell.workspace_limits_m, 0.25, 1.2, cell.tool_offset_m),
                  args.connect_timeout_s, args.rtde_port)
    try:
        arm.set_tool_offset(cell.tool_offset_m)
        return home_from_arm(arm, cell)
    finally:
        arm.disconnect()


def check(args: argparse.Namespace, cell: Cell, width: int, height: int) -> int:
    """Table-plane check: the empty table must come out flat at z = table height."""
    directory = args.output_dir or calibration.DEFAULT_CALIBRATION_DIR
    if args.dry_run:
        from real.camera import SyntheticTableCamera

        pose, scale = dry_run_truth(args.seed), 1.0
        camera = SyntheticTableCamera(nominal_intrinsics(width, height), pose, width, height,
                                      table_z_m=cell.table_z_m, depth_noise_m=args.noise_mm / 1000.0)
    else:
        from real.camera import RealSenseCamera

        pose = calibration.load_camera_pose(directory / calibration.CAMERA_POSE_FILE)
        scale_file = directory / calibration.DEPTH_SCALE_FILE
        scale = calibration.load_depth_scale(scale_file) if scale_file.exists() else 1.0
        camera = RealSenseCamera(width, height, serial=args.camera_serial)
    try:
        _, depth = camera.get_frames()
    finally:
        getattr(camera, "close", lambda: None)()
    height_m, tilt_deg, used = calibration.table_plane_check(depth, camera.intrinsics, pose, scale,
                                                            cell.workspace_limits_m)
    print(f"empty table through the calibration: height {height_m * 1000:+.1f} mm, tilt {tilt_deg:.2f} deg, "
          f"{used * 100:.0f}% of workspace pixels near the table")
    good = abs(height_m) < 0.005 and tilt_deg < 1.0
    print("looks good" if good else "looks wrong: expect |height| < 5 mm and tilt < 1 deg on an empty table")
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
