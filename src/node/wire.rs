//! Roles and disk states to and from their wire form (pure).

use crate::repl;

use super::state::{Disk, Role};

pub fn to_wire_role(r: Role) -> repl::Role {
    match r {
        Role::Primary => repl::Role::Primary,
        Role::Secondary => repl::Role::Secondary,
    }
}

pub fn to_wire_disk(d: Disk) -> repl::DiskState {
    match d {
        Disk::UpToDate => repl::DiskState::UpToDate,
        Disk::Consistent => repl::DiskState::Consistent,
        Disk::Inconsistent => repl::DiskState::Inconsistent,
        Disk::Outdated => repl::DiskState::Outdated,
        Disk::Failed => repl::DiskState::Failed,
    }
}

pub fn from_wire_role(r: repl::Role) -> Role {
    match r {
        repl::Role::Primary => Role::Primary,
        repl::Role::Secondary => Role::Secondary,
    }
}

pub fn from_wire_disk(d: repl::DiskState) -> Disk {
    match d {
        repl::DiskState::UpToDate => Disk::UpToDate,
        repl::DiskState::Consistent => Disk::Consistent,
        repl::DiskState::Inconsistent => Disk::Inconsistent,
        repl::DiskState::Outdated => Disk::Outdated,
        repl::DiskState::Failed | repl::DiskState::Diskless => Disk::Failed,
    }
}
