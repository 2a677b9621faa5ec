//! Transport configuration as written in the config file.

use serde::{Deserialize, Serialize};

/// Which transport a device uses: `kind = "serial"` or `kind = "tcp"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TransportSettings {
    Serial(SerialSettings),
    Tcp(TcpSettings),
}

/// A serial port. Defaults are the common 115200 8N1 without flow control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub path: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub data_bits: DataBitsSetting,
    #[serde(default)]
    pub parity: ParitySetting,
    #[serde(default)]
    pub stop_bits: StopBitsSetting,
    #[serde(default)]
    pub flow_control: FlowControlSetting,
}

fn default_baud() -> u32 {
    115_200
}

impl SerialSettings {
    /// 115200 8N1, no flow control.
    pub fn new(path: impl Into<String>) -> Self {
        SerialSettings {
            path: path.into(),
            baud: default_baud(),
            data_bits: DataBitsSetting::default(),
            parity: ParitySetting::default(),
            stop_bits: StopBitsSetting::default(),
            flow_control: FlowControlSetting::default(),
        }
    }

    /// Bits on the wire per byte (start + data + parity + stop): the divisor
    /// from baud to bytes per second.
    pub fn bits_per_byte(&self) -> u32 {
        let data = match self.data_bits {
            DataBitsSetting::Five => 5,
            DataBitsSetting::Six => 6,
            DataBitsSetting::Seven => 7,
            DataBitsSetting::Eight => 8,
        };
        let parity = u32::from(self.parity != ParitySetting::None);
        let stop = match self.stop_bits {
            StopBitsSetting::One => 1,
            StopBitsSetting::Two => 2,
        };
        1 + data + parity + stop
    }

    /// Payload bytes per second the line can carry at most.
    pub fn bytes_per_second(&self) -> u32 {
        self.baud / self.bits_per_byte()
    }
}

/// A TCP endpoint (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSettings {
    pub addr: String,
    /// Give up one connect attempt after this long (then back off).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Disable Nagle: frames are small and wait for ACKs.
    #[serde(default = "yes")]
    pub nodelay: bool,
    /// TCP keep-alive, so a peer that vanished is noticed.
    #[serde(default = "yes")]
    pub keepalive: bool,
}

fn default_connect_timeout_ms() -> u64 {
    3_000
}

fn yes() -> bool {
    true
}

impl TcpSettings {
    pub fn new(addr: impl Into<String>) -> Self {
        TcpSettings {
            addr: addr.into(),
            connect_timeout_ms: default_connect_timeout_ms(),
            nodelay: true,
            keepalive: true,
        }
    }
}

/// Data bits, written as the number 5..=8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum DataBitsSetting {
    Five,
    Six,
    Seven,
    #[default]
    Eight,
}

impl TryFrom<u8> for DataBitsSetting {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            5 => Ok(DataBitsSetting::Five),
            6 => Ok(DataBitsSetting::Six),
            7 => Ok(DataBitsSetting::Seven),
            8 => Ok(DataBitsSetting::Eight),
            _ => Err(format!("data_bits must be 5, 6, 7 or 8, not {v}")),
        }
    }
}

impl From<DataBitsSetting> for u8 {
    fn from(d: DataBitsSetting) -> u8 {
        match d {
            DataBitsSetting::Five => 5,
            DataBitsSetting::Six => 6,
            DataBitsSetting::Seven => 7,
            DataBitsSetting::Eight => 8,
        }
    }
}

/// `"none"`, `"odd"` or `"even"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParitySetting {
    #[default]
    None,
    Odd,
    Even,
}

/// Stop bits, written as the number 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum StopBitsSetting {
    #[default]
    One,
    Two,
}

impl TryFrom<u8> for StopBitsSetting {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(StopBitsSetting::One),
            2 => Ok(StopBitsSetting::Two),
            _ => Err(format!("stop_bits must be 1 or 2, not {v}")),
        }
    }
}

impl From<StopBitsSetting> for u8 {
    fn from(s: StopBitsSetting) -> u8 {
        match s {
            StopBitsSetting::One => 1,
            StopBitsSetting::Two => 2,
        }
    }
}

/// `"none"`, `"software"` (XON/XOFF) or `"hardware"` (RTS/CTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControlSetting {
    #[default]
    None,
    Software,
    Hardware,
}

impl From<DataBitsSetting> for tokio_serial::DataBits {
    fn from(d: DataBitsSetting) -> Self {
        match d {
            DataBitsSetting::Five => tokio_serial::DataBits::Five,
            DataBitsSetting::Six => tokio_serial::DataBits::Six,
            DataBitsSetting::Seven => tokio_serial::DataBits::Seven,
            DataBitsSetting::Eight => tokio_serial::DataBits::Eight,
        }
    }
}

impl From<ParitySetting> for tokio_serial::Parity {
    fn from(p: ParitySetting) -> Self {
        match p {
            ParitySetting::None => tokio_serial::Parity::None,
            ParitySetting::Odd => tokio_serial::Parity::Odd,
            ParitySetting::Even => tokio_serial::Parity::Even,
        }
    }
}

impl From<StopBitsSetting> for tokio_serial::StopBits {
    fn from(s: StopBitsSetting) -> Self {
        match s {
            StopBitsSetting::One => tokio_serial::StopBits::One,
            StopBitsSetting::Two => tokio_serial::StopBits::Two,
        }
    }
}

impl From<FlowControlSetting> for tokio_serial::FlowControl {
    fn from(f: FlowControlSetting) -> Self {
        match f {
            FlowControlSetting::None => tokio_serial::FlowControl::None,
            FlowControlSetting::Software => tokio_serial::FlowControl::Software,
            FlowControlSetting::Hardware => tokio_serial::FlowControl::Hardware,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_defaults_are_115200_8n1() {
        let t: TransportSettings = toml::from_str("kind = \"serial\"\npath = \"/dev/ttyS0\"")
            .expect("minimal serial settings parse");
        let TransportSettings::Serial(s) = t else {
            panic!("expected serial, got {t:?}");
        };
        assert_eq!(s, SerialSettings::new("/dev/ttyS0"));
        assert_eq!(s.bytes_per_second(), 11_520);
    }

    #[test]
    fn full_serial_and_tcp_parse_and_bad_values_are_named() {
        let s: TransportSettings = toml::from_str(
            "kind = \"serial\"\npath = \"/dev/ttyUSB1\"\nbaud = 9600\ndata_bits = 7\n\
             parity = \"even\"\nstop_bits = 2\nflow_control = \"hardware\"",
        )
        .expect("full serial settings parse");
        let TransportSettings::Serial(s) = s else {
            panic!("expected serial");
        };
        assert_eq!(s.bits_per_byte(), 11);
        let t: TransportSettings =
            toml::from_str("kind = \"tcp\"\naddr = \"127.0.0.1:9100\"").expect("tcp parses");
        assert_eq!(
            t,
            TransportSettings::Tcp(TcpSettings::new("127.0.0.1:9100"))
        );
        let err = toml::from_str::<TransportSettings>(
            "kind = \"serial\"\npath = \"/dev/x\"\ndata_bits = 9",
        )
        .expect_err("9 data bits is rejected")
        .to_string();
        assert!(err.contains("data_bits must be 5, 6, 7 or 8"), "{err}");
    }
}
