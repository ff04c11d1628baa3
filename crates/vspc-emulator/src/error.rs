//! Errors of the emulator's commands.

/// Why a command of [`EmulatedVm`](crate::EmulatedVm) was refused. Nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// The VM is powered off.
    #[error("the VM is powered off")]
    PoweredOff,
    /// The serial port has no connection to the proxy (disconnected, or not yet opened).
    #[error("the serial port has no connection to the proxy")]
    NotConnected,
    /// A vMotion is already under way.
    #[error("a vMotion is already under way")]
    VmotionInProgress,
    /// The vMotion sequence must not be empty (the wire carries no length).
    #[error("empty vMotion sequence")]
    EmptySequence,
}
