//! Where audit events come from: the audit webhook ([`webhook`]), the audit
//! log file ([`logfile`]) and admission capture ([`admission`]). Each reads its
//! bodies its own way, lets [`gate`] decide who may post, and hands every body
//! to the [`intake`], which encodes, de-duplicates ([`dedupe`]) and spools it.
//! [`listen`] serves the listeners' TLS connections within bounds.

pub mod admission;
pub mod dedupe;
pub mod gate;
pub mod intake;
pub mod listen;
pub mod logfile;
pub mod mutate;
pub mod webhook;

pub use gate::{AuthPolicy, Gate, PeerAuth, authenticate, bearer, reject_from};
pub use intake::{Encoded, Intake, IntakeError, Lifecycle, Stored, encode};
pub use listen::{ConnectionLimits, TlsError, TlsFiles, certificate_names, check_tls, serve};
pub use webhook::{BodyBudget, Ingest, RequestLimits, app};
