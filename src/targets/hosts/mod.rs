//! `target: hosts` (and `ec2` after discovery): Docker Engine over SSH,
//! blue-green behind nginx.
