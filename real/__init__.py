"""Real-robot backend: UR5 (ur-rtde) + parallel gripper + RealSense, calibration, segmentation.

Modules (hardware libraries are imported lazily, only when a real device is opened):
- `real.ur5`: `UR5Robot` (a `robot.Backend`), the safety envelope, `RTDEArm` / `DryRunArm`.
- `real.gripper`: `RobotiqGripper` (URCap socket, port 63352) and `NullGripper`.
- `real.camera`: `RealSenseCamera`, `FileCamera`, `ArrayCamera`, `SyntheticTableCamera`.
- `real.segmentation`: colour segmentation of the colour heightmap into object masks.
- `real.calibration`: camera-pose solver, marker detection, calibration files;
  `python -m real.calibrate` is its command line (see real/README.md).
"""
