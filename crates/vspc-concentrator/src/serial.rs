//! RFC 2217 (COM-PORT-OPTION) for clients, and the VM side's UART reports.
//!
//! Every VM port has a model of its UART ([`PortModel`]). ESXi, where it offers COM-PORT on
//! the VM connection, reports the guest's settings as an RFC 2217 client would: those
//! settings are the truth, acknowledged to the VM and answered to clients, and no client can
//! change them. A setting the VM never reported is emulated: a read-write client may set it,
//! and it is kept for the port. Control lines map as a null-modem cable would: the VM's DTR is
//! the client's DSR, its RTS the client's CTS, and a live VM connection is carrier detect.
//! A client's BREAK-ON is a serial break sent to the VM, in order with its data. A read-only
//! client (or one still choosing its VM) may ask but not set: it is answered with the current
//! value, which is how RFC 2217 says a server refuses. A client still choosing its VM has its
//! settings acknowledged and not applied: a serial tool sets its port up before it can type
//! the selection line. `docs/rfc2217.md` tabulates it.

use vspc_proto::vspc_telnet::comport::{
    ComPortCommand, ComPortMessage, Control, LineState, ModemState, Origin, Parity, Purge, StopSize,
};
use vspc_proto::vspc_telnet::option;
use vspc_proto::SessionId;

use crate::concentrator::Concentrator;
use crate::types::{ClientId, VmId, Wakeup};

/// What the concentrator tells a client that asks for its SIGNATURE.
const SIGNATURE: &[u8] = b"vspc-concentrator";

/// The UART of one VM port, as the VM reported it or as clients set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortModel {
    baud_rate: u32,
    data_size: u8,
    parity: Parity,
    stop_size: StopSize,
    /// Outbound flow control: `NoFlowControl`, `XonXoffFlowControl`, `HardwareFlowControl`,
    /// `DcdFlowControl` or `DsrFlowControl`.
    flow: Control,
    /// Inbound flow control: `NoInboundFlowControl`, `XonXoffInboundFlowControl`,
    /// `HardwareInboundFlowControl` or `DtrFlowControl`.
    inbound_flow: Control,
    /// Lines a client sets (toward the VM).
    dtr: bool,
    rts: bool,
    break_on: bool,
    /// Lines the VM sets (toward the clients: their DSR and CTS).
    vm_dtr: bool,
    vm_rts: bool,
    /// The VM is sending a break (the clients' BREAK-DETECT).
    vm_break: bool,
    /// Which settings the VM reported (bits of [`Field`]): those are not the clients' to set.
    reported: u8,
}

impl Default for PortModel {
    fn default() -> Self {
        PortModel {
            baud_rate: 9600,
            data_size: 8,
            parity: Parity::None,
            stop_size: StopSize::One,
            flow: Control::NoFlowControl,
            inbound_flow: Control::NoInboundFlowControl,
            dtr: true,
            rts: true,
            break_on: false,
            vm_dtr: true,
            vm_rts: true,
            vm_break: false,
            reported: 0,
        }
    }
}

/// The settings the VM side can report, as bits of [`PortModel::reported`].
#[derive(Debug, Clone, Copy)]
enum Field {
    BaudRate = 1,
    DataSize = 2,
    Parity = 4,
    StopSize = 8,
    Flow = 16,
    InboundFlow = 32,
}

impl PortModel {
    fn reported(&self, field: Field) -> bool {
        self.reported & field as u8 != 0
    }

    /// The modem state a client sees: carrier while the VM is connected, DSR and CTS from the
    /// VM's DTR and RTS (a null-modem cable).
    fn modem_state(&self, connected: bool) -> u8 {
        let mut state = 0;
        if connected {
            state |= ModemState::CARRIER_DETECT;
            if self.vm_dtr {
                state |= ModemState::DSR;
            }
            if self.vm_rts {
                state |= ModemState::CTS;
            }
        }
        state
    }

    fn line_state(&self) -> u8 {
        if self.vm_break {
            LineState::BREAK_DETECT
        } else {
            0
        }
    }

    fn break_state(&self) -> Control {
        if self.break_on {
            Control::BreakOn
        } else {
            Control::BreakOff
        }
    }

    /// Applies `command` if `may_set` allows it for that setting (and the value is a
    /// setting, not a request), then returns the answer: the value now in effect. `None`
    /// for commands that are not settings.
    fn apply(
        &mut self,
        command: &ComPortCommand,
        may_set: impl Fn(&Self, Field) -> bool,
    ) -> Option<ComPortCommand> {
        Some(match command {
            ComPortCommand::SetBaudRate(rate) => {
                if *rate != 0 && may_set(self, Field::BaudRate) {
                    self.baud_rate = *rate;
                }
                ComPortCommand::SetBaudRate(self.baud_rate)
            }
            ComPortCommand::SetDataSize(size) => {
                if (5..=8).contains(size) && may_set(self, Field::DataSize) {
                    self.data_size = *size;
                }
                ComPortCommand::SetDataSize(self.data_size)
            }
            ComPortCommand::SetParity(parity) => {
                let valid = !matches!(parity, Parity::Request | Parity::Other(_));
                if valid && may_set(self, Field::Parity) {
                    self.parity = *parity;
                }
                ComPortCommand::SetParity(self.parity)
            }
            ComPortCommand::SetStopSize(stop) => {
                let valid = !matches!(stop, StopSize::Request | StopSize::Other(_));
                if valid && may_set(self, Field::StopSize) {
                    self.stop_size = *stop;
                }
                ComPortCommand::SetStopSize(self.stop_size)
            }
            ComPortCommand::SetControl(control) => {
                ComPortCommand::SetControl(self.control(*control, &may_set)?)
            }
            _ => return None,
        })
    }

    /// SET-CONTROL's flow-control settings and requests (the lines are handled by the
    /// caller, who knows which side sets them).
    fn control(
        &mut self,
        control: Control,
        may_set: &impl Fn(&Self, Field) -> bool,
    ) -> Option<Control> {
        use Control::*;
        Some(match control {
            RequestFlowControl => self.flow,
            NoFlowControl | XonXoffFlowControl | HardwareFlowControl | DcdFlowControl
            | DsrFlowControl => {
                if may_set(self, Field::Flow) {
                    self.flow = control;
                }
                self.flow
            }
            RequestInboundFlowControl => self.inbound_flow,
            NoInboundFlowControl
            | XonXoffInboundFlowControl
            | HardwareInboundFlowControl
            | DtrFlowControl => {
                if may_set(self, Field::InboundFlow) {
                    self.inbound_flow = control;
                }
                self.inbound_flow
            }
            _ => return None,
        })
    }

    fn mark_reported(&mut self, command: &ComPortCommand) {
        let field = match command {
            ComPortCommand::SetBaudRate(rate) if *rate != 0 => Field::BaudRate,
            ComPortCommand::SetDataSize(size) if (5..=8).contains(size) => Field::DataSize,
            ComPortCommand::SetParity(p) if !matches!(p, Parity::Request | Parity::Other(_)) => {
                Field::Parity
            }
            ComPortCommand::SetStopSize(s)
                if !matches!(s, StopSize::Request | StopSize::Other(_)) =>
            {
                Field::StopSize
            }
            ComPortCommand::SetControl(
                Control::NoFlowControl
                | Control::XonXoffFlowControl
                | Control::HardwareFlowControl
                | Control::DcdFlowControl
                | Control::DsrFlowControl,
            ) => Field::Flow,
            ComPortCommand::SetControl(
                Control::NoInboundFlowControl
                | Control::XonXoffInboundFlowControl
                | Control::HardwareInboundFlowControl
                | Control::DtrFlowControl,
            ) => Field::InboundFlow,
            _ => return,
        };
        self.reported |= field as u8;
    }
}

/// A client that negotiated COM-PORT: what it asked to be told, and what it was told last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SerialClient {
    line_mask: u8,
    modem_mask: u8,
    /// FLOWCONTROL-SUSPEND: the client cannot take output now.
    pub(crate) suspended: bool,
    /// The masked modem and line states last sent (`None`: send it, as for a poll).
    sent_modem: Option<u8>,
    sent_line: Option<u8>,
}

impl Default for SerialClient {
    fn default() -> Self {
        // RFC 2217's defaults: no line-state bits reported, every modem-state bit reported.
        SerialClient {
            line_mask: 0,
            modem_mask: 0xff,
            suspended: false,
            sent_modem: None,
            sent_line: Some(0),
        }
    }
}

/// What a client's COM-PORT request asks of the rest of the core, besides the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SerialAction {
    None,
    /// A serial break to the VM, in order with the client's data.
    Break,
}

impl Concentrator {
    /// A client's WILL COM-PORT took effect: it is told the port's modem state at once (RFC
    /// 2217 clients learn CTS/DSR/CD only from notifications).
    pub(crate) fn serial_client_enabled(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.serial.get_or_insert_with(Box::default);
        self.notify_client(client);
    }

    /// One COM-PORT subnegotiation from a client (payload unescaped). Answers are queued to
    /// the client; a malformed one is ignored and counted, and nothing of it reaches data.
    pub(crate) fn serial_client_request(
        &mut self,
        client: ClientId,
        payload: &[u8],
    ) -> SerialAction {
        let Some(c) = self.clients.get_mut(&client) else {
            return SerialAction::None;
        };
        if c.serial.is_none() {
            // COM-PORT was not negotiated: nothing to answer.
            self.counters.com_port_ignored += 1;
            return SerialAction::None;
        }
        let vm = c.vm;
        let may_write = vm.is_some() && c.mode.writes() && c.selection.is_none();
        // Still choosing a VM: settings are acknowledged and not applied, no break is sent.
        let choosing = vm.is_none();
        let may_set = may_write || choosing;
        // NOTIFY-LINESTATE / NOTIFY-MODEMSTATE without a value: a poll for the current state.
        if let [code @ (6 | 7)] = payload {
            if let Some(serial) = c.serial.as_mut() {
                if *code == 7 {
                    serial.sent_modem = None;
                } else {
                    serial.sent_line = None;
                }
            }
            self.notify_client(client);
            return SerialAction::None;
        }
        let message = match ComPortMessage::parse(payload) {
            Ok(message) if message.origin == Origin::Client => message,
            _ => {
                self.counters.com_port_ignored += 1;
                return SerialAction::None;
            }
        };
        let mut action = SerialAction::None;
        let answer = match &message.command {
            ComPortCommand::Signature(text) => {
                if !text.is_empty() {
                    return SerialAction::None;
                }
                Some(ComPortCommand::Signature(SIGNATURE.to_vec()))
            }
            ComPortCommand::SetControl(control) if is_line(*control) => {
                let control = *control;
                let answer = self.with_model(vm, |model| match control {
                    Control::RequestBreak => model.break_state(),
                    Control::BreakOn | Control::BreakOff => {
                        let on = control == Control::BreakOn;
                        if may_set {
                            if on && !model.break_on && may_write {
                                action = SerialAction::Break;
                            }
                            model.break_on = on;
                        }
                        model.break_state()
                    }
                    Control::RequestDtr | Control::DtrOn | Control::DtrOff => {
                        if may_set && control != Control::RequestDtr {
                            model.dtr = control == Control::DtrOn;
                        }
                        line(model.dtr, Control::DtrOn, Control::DtrOff)
                    }
                    _ => {
                        if may_set && control != Control::RequestRts {
                            model.rts = control == Control::RtsOn;
                        }
                        line(model.rts, Control::RtsOn, Control::RtsOff)
                    }
                });
                Some(ComPortCommand::SetControl(answer))
            }
            ComPortCommand::SetLineStateMask(mask) => {
                if let Some(serial) = self
                    .clients
                    .get_mut(&client)
                    .and_then(|c| c.serial.as_mut())
                {
                    serial.line_mask = mask.0;
                }
                Some(message.command.clone())
            }
            ComPortCommand::SetModemStateMask(mask) => {
                if let Some(serial) = self
                    .clients
                    .get_mut(&client)
                    .and_then(|c| c.serial.as_mut())
                {
                    serial.modem_mask = mask.0;
                }
                Some(message.command.clone())
            }
            ComPortCommand::FlowControlSuspend | ComPortCommand::FlowControlResume => {
                let suspend = message.command == ComPortCommand::FlowControlSuspend;
                if let Some(serial) = self
                    .clients
                    .get_mut(&client)
                    .and_then(|c| c.serial.as_mut())
                {
                    serial.suspended = suspend;
                }
                if !suspend {
                    self.wakeups.push_back(Wakeup::Client(client));
                }
                None
            }
            ComPortCommand::PurgeData(purge) => {
                if matches!(purge, Purge::Other(_)) {
                    self.counters.com_port_ignored += 1;
                    return SerialAction::None;
                }
                self.purge_client(client, *purge);
                Some(message.command.clone())
            }
            ComPortCommand::NotifyLineState(_) | ComPortCommand::NotifyModemState(_) => {
                // The server's to send; a client's is meaningless.
                self.counters.com_port_ignored += 1;
                None
            }
            setting => {
                let answer = self.with_model(vm, |model| {
                    model.apply(setting, |m, field| may_set && !m.reported(field))
                });
                if answer.is_none() {
                    self.counters.com_port_ignored += 1;
                }
                answer
            }
        };
        if let Some(command) = answer {
            self.send_serial(client, &command);
        }
        action
    }

    /// One COM-PORT message from a VM connection (the guest's UART, reported by ESXi as an
    /// RFC 2217 client): recorded as the truth and acknowledged; line changes notified.
    pub(crate) fn serial_vm_report(&mut self, conn: SessionId, message: ComPortMessage) {
        let Some(vm) = self.endpoint.data(conn).and_then(|c| c.vm) else {
            return;
        };
        if message.origin != Origin::Client {
            self.counters.com_port_ignored += 1;
            return;
        }
        let answer = self.with_model(Some(vm), |model| match &message.command {
            ComPortCommand::Signature(text) if text.is_empty() => {
                Some(ComPortCommand::Signature(SIGNATURE.to_vec()))
            }
            ComPortCommand::Signature(_) => None,
            ComPortCommand::SetControl(control) if is_line(*control) => {
                let answer = match control {
                    Control::BreakOn | Control::BreakOff => {
                        model.vm_break = *control == Control::BreakOn;
                        *control
                    }
                    Control::DtrOn | Control::DtrOff => {
                        model.vm_dtr = *control == Control::DtrOn;
                        *control
                    }
                    Control::RtsOn | Control::RtsOff => {
                        model.vm_rts = *control == Control::RtsOn;
                        *control
                    }
                    Control::RequestBreak => {
                        line(model.vm_break, Control::BreakOn, Control::BreakOff)
                    }
                    Control::RequestDtr => line(model.vm_dtr, Control::DtrOn, Control::DtrOff),
                    _ => line(model.vm_rts, Control::RtsOn, Control::RtsOff),
                };
                Some(ComPortCommand::SetControl(answer))
            }
            ComPortCommand::SetLineStateMask(_)
            | ComPortCommand::SetModemStateMask(_)
            | ComPortCommand::PurgeData(_) => Some(message.command.clone()),
            ComPortCommand::FlowControlSuspend
            | ComPortCommand::FlowControlResume
            | ComPortCommand::NotifyLineState(_)
            | ComPortCommand::NotifyModemState(_) => None,
            setting => {
                model.mark_reported(setting);
                model.apply(setting, |_, _| true)
            }
        });
        if let Some(command) = answer {
            let reply = ComPortMessage {
                origin: Origin::Server,
                command,
            };
            self.endpoint.send_com_port(conn, &reply);
            self.wakeups.push_back(Wakeup::Vm(conn));
        }
        self.notify_vm_clients(vm);
    }

    /// Tells every COM-PORT client of `vm` what changed in its modem and line state.
    pub(crate) fn notify_vm_clients(&mut self, vm: VmId) {
        let Some(entry) = self.registry.get(vm) else {
            return;
        };
        let clients: Vec<ClientId> = entry
            .clients
            .iter()
            .copied()
            .filter(|c| self.clients.get(c).is_some_and(|c| c.serial.is_some()))
            .collect();
        for client in clients {
            self.notify_client(client);
        }
    }

    /// Sends `client` NOTIFY-MODEMSTATE / NOTIFY-LINESTATE where its masked view changed
    /// (nothing to a client that did not negotiate COM-PORT).
    pub(crate) fn notify_client(&mut self, client: ClientId) {
        let Some(c) = self.clients.get(&client) else {
            return;
        };
        let Some(serial) = c.serial.as_deref() else {
            return;
        };
        let (modem, line) = match c.vm.and_then(|vm| self.registry.get(vm)) {
            Some(entry) => {
                let model = entry.serial.as_deref().cloned().unwrap_or_default();
                (
                    model.modem_state(entry.active.is_some()),
                    model.line_state(),
                )
            }
            None => (0, 0),
        };
        let (modem_mask, line_mask) = (serial.modem_mask, serial.line_mask);
        let (sent_modem, sent_line) = (serial.sent_modem, serial.sent_line);
        let mut out = Vec::new();
        let masked_modem = modem & modem_mask;
        if sent_modem != Some(masked_modem) {
            // The delta bits say which of CD, DSR and CTS changed since the last report.
            let before = sent_modem.unwrap_or(masked_modem);
            let delta = ((before ^ masked_modem) >> 4) & 0b1011;
            let value = masked_modem | (delta & modem_mask);
            out.push(ComPortCommand::NotifyModemState(ModemState(value)));
        }
        let masked_line = line & line_mask;
        if sent_line != Some(masked_line) {
            out.push(ComPortCommand::NotifyLineState(LineState(masked_line)));
        }
        if let Some(serial) = self
            .clients
            .get_mut(&client)
            .and_then(|c| c.serial.as_mut())
        {
            serial.sent_modem = Some(masked_modem);
            serial.sent_line = Some(masked_line);
        }
        for command in out {
            self.send_serial(client, &command);
        }
    }

    /// Queues a server COM-PORT message to a telnet client.
    fn send_serial(&mut self, client: ClientId, command: &ComPortCommand) {
        let message = ComPortMessage {
            origin: Origin::Server,
            command: command.clone(),
        };
        let mut payload = Vec::new();
        message.encode(&mut payload);
        let Some(telnet) = self
            .clients
            .get_mut(&client)
            .and_then(|c| c.telnet.as_mut())
        else {
            return;
        };
        telnet.send_subnegotiation(option::COM_PORT, &payload);
        if let Some(bytes) = telnet.poll_transmit() {
            self.queue_client(client, bytes);
        }
    }

    /// Runs `f` on the port model of `vm`, created on first use (a VM nobody asks about
    /// keeps none). Without a VM (a client still choosing), on a scratch model not kept.
    fn with_model<R>(&mut self, vm: Option<VmId>, f: impl FnOnce(&mut PortModel) -> R) -> R {
        match vm.and_then(|vm| self.registry.get_mut(vm)) {
            Some(entry) => f(entry.serial.get_or_insert_with(Box::default)),
            None => f(&mut PortModel::default()),
        }
    }
}

/// `on` or `off`, as a line's state.
fn line(state: bool, on: Control, off: Control) -> Control {
    if state {
        on
    } else {
        off
    }
}

/// SET-CONTROL values about the BREAK, DTR and RTS lines (the rest are flow control).
fn is_line(control: Control) -> bool {
    use Control::*;
    matches!(
        control,
        RequestBreak
            | BreakOn
            | BreakOff
            | RequestDtr
            | DtrOn
            | DtrOff
            | RequestRts
            | RtsOn
            | RtsOff
    )
}
