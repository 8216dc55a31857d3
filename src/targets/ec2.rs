//! `target: ec2`: finds running instances through the EC2 API and hands
//! their addresses to the hosts target.
