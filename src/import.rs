//! `medsettle import persons|catalogue|institutions FILE.csv`: a gRPC client of a running
//! server, like `medsettle clearing export`, so every row goes through the API's
//! authorization, validation, idempotency and audit.
//!
//! The file is read as a stream, one record at a time (at most [`MAX_RECORD_BYTES`] each, so
//! memory stays bounded whatever the input), and sent in batches of `--batch-size` rows, one
//! call and one database transaction per batch: EnrolPersons, UpsertCatalogue or
//! RegisterInstitutions. A row that cannot be parsed, repeats an earlier row's key or is refused
//! by the server is rejected with its line number, field and reason; the other rows of its
//! batch are written together, all or nothing. Each batch's request id is derived from its
//! first line and content, so running an interrupted import again replays the batches already
//! done instead of writing them twice.

use crate::proto::registry_service_client::RegistryServiceClient;
use crate::proto::{
    BatchItemOutcome, BatchItemResult, CatalogueClass, CatalogueItem, CatalogueKind,
    EnrolPersonRequest, EnrolPersonsRequest, InstitutionKind, InsuranceType, PersonCategory,
    PersonInsurance, RegisterInstitutionRequest, RegisterInstitutionsRequest,
    UpsertCatalogueRequest,
};
use anyhow::Context;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Longest record kept (its fields' bytes); a longer one is rejected whole and skipped.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most fields in a record; a record with more is rejected whole and skipped.
pub const MAX_FIELDS: usize = 64;
/// Default rows per batch.
pub const DEFAULT_BATCH: usize = 1000;
/// Attempts of one batch call when the server is unavailable or reports a transient conflict
/// (the same request id every time, so a retry never writes twice).
const ATTEMPTS: u32 = 4;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Insured persons (EnrolPersons).
    Persons,
    /// Catalogue items of one treatment region (UpsertCatalogue; give --region).
    Catalogue,
    /// Designated hospitals and pharmacies (RegisterInstitutions).
    Institutions,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Persons => "persons",
            Kind::Catalogue => "catalogue",
            Kind::Institutions => "institutions",
        }
    }

    /// The columns of this kind's files.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Kind::Persons => PERSONS,
            Kind::Catalogue => CATALOGUE,
            Kind::Institutions => INSTITUTIONS,
        }
    }

    /// Most rows per batch: what one call of the server takes.
    pub fn max_batch(self) -> usize {
        match self {
            Kind::Persons => crate::service::persons::MAX_BATCH,
            Kind::Catalogue => crate::service::catalogue::MAX_ITEMS,
            Kind::Institutions => crate::service::institutions::MAX_BATCH,
        }
    }

    /// How the summary names rows that were already there.
    fn already(self) -> Option<&'static str> {
        match self {
            Kind::Persons => Some("already enrolled"),
            Kind::Catalogue => None,
            Kind::Institutions => Some("already registered"),
        }
    }
}

/// The arguments of `medsettle import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// What the file holds.
    pub kind: Kind,
    /// The CSV file ("-" = standard input).
    pub file: PathBuf,
    /// Rows per batch: one call and one transaction each (at most 5000 for persons and
    /// institutions, 20000 for catalogue).
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    pub batch_size: usize,
    /// The treatment region whose catalogue the file is (catalogue only), e.g. 150300.
    #[arg(long)]
    pub region: Option<String>,
    /// Write the rejected rows here as CSV (line,field,reason) instead of to stderr.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// The server.
    #[arg(
        long,
        env = "MEDSETTLE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// A bureau token (its own region) or an operator token.
    #[arg(long, env = "MEDSETTLE_TOKEN", hide_env_values = true)]
    pub token: String,
}

// ------------------------------------------------------------------------------ columns

/// A column of an import file.
#[derive(Debug)]
pub struct Column {
    pub name: &'static str,
    pub required: bool,
    pub help: &'static str,
}

const fn col(name: &'static str, required: bool, help: &'static str) -> Column {
    Column {
        name,
        required,
        help,
    }
}

pub const PERSONS: &[Column] = &[
    col(
        "national_id",
        true,
        "18-character national ID (GB 11643) with its check digit",
    ),
    col("name", true, "the person's name"),
    col("home_region", true, "home region code, e.g. 150300"),
    col(
        "insurance_type",
        true,
        "310, 390 or 510 (employee, resident, maternity); several separated by ';'",
    ),
    col(
        "category",
        true,
        "active, retired or resident: one per insurance type (';'), or one for all",
    ),
    col(
        "card_no",
        false,
        "social-security card number; empty = none",
    ),
    col("evoucher_token", false, "e-voucher token; empty = none"),
    col(
        "assistance_recipient",
        false,
        "true or false (also 1/0, yes/no); empty = false",
    ),
    col(
        "opening_balance",
        false,
        "opening personal-account balance in yuan, e.g. 1000.00 (employees); empty = 0.00",
    ),
];

pub const CATALOGUE: &[Column] = &[
    col(
        "code",
        true,
        "med_list_codg: 1..50 letters, digits, '.', '-' or '_'",
    ),
    col("name", true, "item name"),
    col("kind", true, "drug, service or material"),
    col("class", true, "A, B or C (甲/乙/丙类)"),
    col(
        "b_self_pay_ratio",
        false,
        "class B only: first self-paid ratio, e.g. 0.10",
    ),
    col(
        "price_cap",
        false,
        "price cap per unit in yuan, up to 6 decimals; empty = no cap",
    ),
    col(
        "effective_from",
        true,
        "first date the entry applies, YYYY-MM-DD",
    ),
];

pub const INSTITUTIONS: &[Column] = &[
    col("code", true, "fixmedins_code: H or P and 11 digits"),
    col("name", true, "institution name"),
    col("region", true, "region code, e.g. 150300"),
    col("kind", true, "hospital or pharmacy"),
    col(
        "level",
        false,
        "1, 2 or 3 for hospitals; 0 or empty for pharmacies",
    ),
    col(
        "cross_region_enabled",
        false,
        "true or false (also 1/0, yes/no); empty = false",
    ),
    col("valid_from", false, "YYYY-MM-DD; empty = today"),
    col("valid_until", false, "YYYY-MM-DD; empty = open-ended"),
];

/// The file formats and rules, for `medsettle import --help`.
pub fn help() -> String {
    let mut s = String::from(
        "Files are UTF-8 CSV (RFC 4180 quoting; a BOM is skipped) with a header row naming\n\
         the columns, in any order; optional columns may be left out, unknown ones are an\n\
         error. Amounts and ratios are decimal strings, dates YYYY-MM-DD. (* = required)\n",
    );
    for kind in [Kind::Persons, Kind::Catalogue, Kind::Institutions] {
        s.push_str(&format!("\n{} columns:\n", kind.name()));
        for c in kind.columns() {
            let name = format!("{}{}", c.name, if c.required { "*" } else { "" });
            s.push_str(&format!("  {name:<22} {}\n", c.help));
        }
    }
    s.push_str(
        "\nEach batch of --batch-size rows is one call and one transaction: its valid rows are\n\
         written together or not at all. Rows already there (a person's national ID, an\n\
         institution's code) count as already enrolled / registered and are left unchanged;\n\
         a catalogue row replaces the entry of the same code and effective_from. A key repeated\n\
         within the file rejects the later row. Running an interrupted import again replays\n\
         the batches already done. Rejected rows (line, field, reason) go to --rejects FILE as\n\
         CSV, or to stderr; the summary goes to stdout. The first batch the server refuses as\n\
         a whole stops the import. Exit code 0 when no row was rejected, 1 otherwise.",
    );
    s
}

/// Where each column of a kind is in the file (by header name).
#[derive(Debug)]
pub struct Header {
    /// Per column of the kind: its index in the file's records, if present.
    at: Vec<Option<usize>>,
    /// Field count of the header.
    width: usize,
}

impl Header {
    /// Maps a header record to the kind's columns. Unknown, repeated or missing required
    /// columns are an error.
    pub fn parse(kind: Kind, fields: &[Vec<u8>]) -> anyhow::Result<Header> {
        let columns = kind.columns();
        let mut at = vec![None; columns.len()];
        for (i, raw) in fields.iter().enumerate() {
            let name = std::str::from_utf8(raw)
                .map_err(|_| anyhow::anyhow!("header column {} is not valid UTF-8", i + 1))?
                .trim()
                .to_ascii_lowercase();
            let Some(c) = columns.iter().position(|c| c.name == name) else {
                anyhow::bail!(
                    "unknown column {name:?} in the header; {} columns are: {}",
                    kind.name(),
                    names(columns)
                );
            };
            if at[c].is_some() {
                anyhow::bail!("column {name:?} appears twice in the header");
            }
            at[c] = Some(i);
        }
        let missing: Vec<&str> = columns
            .iter()
            .zip(&at)
            .filter(|(c, a)| c.required && a.is_none())
            .map(|(c, _)| c.name)
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "the header lacks the required column(s) {}; {} columns are: {}",
                missing.join(", "),
                kind.name(),
                names(columns)
            );
        }
        Ok(Header {
            at,
            width: fields.len(),
        })
    }
}

fn names(columns: &[Column]) -> String {
    columns.iter().map(|c| c.name).collect::<Vec<_>>().join(",")
}

/// A rejected row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    /// The column (or request field) at fault; "" = the row as a whole.
    pub field: String,
    pub reason: String,
}

/// A row's fields by column name, trimmed.
struct Row<'a> {
    kind: Kind,
    header: &'a Header,
    fields: Vec<&'a str>,
}

impl Row<'_> {
    /// The value of `column` ("" when the file has no such column).
    fn get(&self, column: &str) -> &str {
        self.kind
            .columns()
            .iter()
            .position(|c| c.name == column)
            .and_then(|c| self.header.at[c])
            .and_then(|i| self.fields.get(i))
            .map_or("", |s| s.trim())
    }
}

/// Field-level failure of a row: (column, reason).
type Bad = (&'static str, String);

/// A prost enum value named by `text`: its number, its full name ("INSURANCE_TYPE_EMPLOYEE")
/// or its name without the prefix ("employee"), any case. UNSPECIFIED is no value.
fn enum_code<E>(text: &str, prefix: &str, from_name: fn(&str) -> Option<E>) -> Option<i32>
where
    E: TryFrom<i32> + Into<i32>,
{
    let code: i32 = match text.parse::<i32>() {
        Ok(n) => E::try_from(n).ok()?.into(),
        Err(_) => {
            let name = text.to_ascii_uppercase().replace(['-', ' '], "_");
            from_name(&name)
                .or_else(|| from_name(&format!("{prefix}{name}")))?
                .into()
        }
    };
    (code != 0).then_some(code)
}

fn flag(column: &'static str, text: &str) -> Result<bool, Bad> {
    match text.to_ascii_lowercase().as_str() {
        "" | "false" | "f" | "0" | "no" | "n" => Ok(false),
        "true" | "t" | "1" | "yes" | "y" => Ok(true),
        _ => Err((column, format!("{text:?} is not true or false"))),
    }
}

/// ';'-separated values, trimmed, empty ones dropped.
fn list(text: &str) -> Vec<&str> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn person(row: &Row) -> Result<EnrolPersonRequest, Bad> {
    let types = list(row.get("insurance_type"));
    let categories = list(row.get("category"));
    if types.is_empty() {
        return Err((
            "insurance_type",
            "at least one insurance type is required".into(),
        ));
    }
    if categories.is_empty() {
        return Err(("category", "at least one category is required".into()));
    }
    if categories.len() != 1 && categories.len() != types.len() {
        return Err((
            "category",
            format!(
                "{} categories for {} insurance types: give one per type, or one for all",
                categories.len(),
                types.len()
            ),
        ));
    }
    let mut insurances = Vec::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        let insurance_type = enum_code(t, "INSURANCE_TYPE_", InsuranceType::from_str_name)
            .ok_or_else(|| {
                (
                    "insurance_type",
                    format!("{t:?} is not 310, 390, 510, employee, resident or maternity"),
                )
            })?;
        let c = categories
            .get(i)
            .or(categories.first())
            .copied()
            .unwrap_or("");
        let category =
            enum_code(c, "PERSON_CATEGORY_", PersonCategory::from_str_name).ok_or_else(|| {
                (
                    "category",
                    format!("{c:?} is not active, retired or resident"),
                )
            })?;
        insurances.push(PersonInsurance {
            insurance_type,
            category,
            status: 0,
        });
    }
    Ok(EnrolPersonRequest {
        request_id: String::new(),
        national_id: row.get("national_id").to_owned(),
        name: row.get("name").to_owned(),
        home_region: row.get("home_region").to_owned(),
        insurances,
        card_no: row.get("card_no").to_owned(),
        evoucher_token: row.get("evoucher_token").to_owned(),
        assistance_recipient: flag("assistance_recipient", row.get("assistance_recipient"))?,
        opening_balance: row.get("opening_balance").to_owned(),
    })
}

fn catalogue_item(row: &Row) -> Result<CatalogueItem, Bad> {
    let kind = row.get("kind");
    let class = row.get("class");
    let item = CatalogueItem {
        region: String::new(),
        code: row.get("code").to_owned(),
        name: row.get("name").to_owned(),
        kind: enum_code(kind, "CATALOGUE_KIND_", CatalogueKind::from_str_name)
            .ok_or_else(|| ("kind", format!("{kind:?} is not drug, service or material")))?,
        class: enum_code(class, "CATALOGUE_CLASS_", CatalogueClass::from_str_name)
            .ok_or_else(|| ("class", format!("{class:?} is not A, B or C")))?,
        b_self_pay_ratio: row.get("b_self_pay_ratio").to_owned(),
        price_cap: row.get("price_cap").to_owned(),
        effective_from: row.get("effective_from").to_owned(),
        version: 0,
    };
    // The server's own check of an upsert item, so that one bad row does not fail its batch.
    match crate::grpc::registry::catalogue_row("", &item) {
        Ok(_) => Ok(item),
        Err(crate::service::AppError::Invalid { field, reason }) => {
            let column = CATALOGUE
                .iter()
                .find(|c| c.name == field)
                .map_or("", |c| c.name);
            Err((column, reason))
        }
        Err(e) => Err(("", e.to_string())),
    }
}

fn institution(row: &Row) -> Result<RegisterInstitutionRequest, Bad> {
    let kind = row.get("kind");
    let level = row.get("level");
    Ok(RegisterInstitutionRequest {
        request_id: String::new(),
        code: row.get("code").to_owned(),
        name: row.get("name").to_owned(),
        region: row.get("region").to_owned(),
        kind: enum_code(kind, "INSTITUTION_KIND_", InstitutionKind::from_str_name)
            .ok_or_else(|| ("kind", format!("{kind:?} is not hospital or pharmacy")))?,
        level: if level.is_empty() {
            0
        } else {
            level
                .parse::<u32>()
                .map_err(|_| ("level", format!("{level:?} is not 0, 1, 2 or 3")))?
        },
        cross_region_enabled: flag("cross_region_enabled", row.get("cross_region_enabled"))?,
        valid_from: row.get("valid_from").to_owned(),
        valid_until: row.get("valid_until").to_owned(),
    })
}

/// A row ready to send.
#[derive(Debug, Clone)]
enum Item {
    Person(EnrolPersonRequest),
    Catalogue(CatalogueItem),
    Institution(RegisterInstitutionRequest),
}

/// A value that must be unique within the file.
struct Key {
    /// The column a repeat is rejected on.
    column: &'static str,
    /// What is repeated, for the reason.
    what: &'static str,
    value: String,
}

impl Item {
    /// The values that must be unique within the file.
    fn keys(&self) -> Vec<Key> {
        let key = |column, what, value| Key {
            column,
            what,
            value,
        };
        match self {
            Item::Person(p) => {
                // The server's form of the ID (a lower-case x upper-cased), when it is one.
                let id = crate::domain::ids::NationalId::parse("national_id", &p.national_id)
                    .map_or_else(|_| p.national_id.clone(), |n| n.as_str().to_owned());
                let mut keys = vec![key("national_id", "national_id", id)];
                if !p.card_no.is_empty() {
                    keys.push(key("card_no", "card_no", p.card_no.clone()));
                }
                if !p.evoucher_token.is_empty() {
                    keys.push(key(
                        "evoucher_token",
                        "evoucher_token",
                        p.evoucher_token.clone(),
                    ));
                }
                keys
            }
            Item::Catalogue(c) => vec![key(
                "code",
                "code and effective_from",
                format!("{}\u{0}{}", c.code, c.effective_from),
            )],
            Item::Institution(i) => vec![key("code", "code", i.code.clone())],
        }
    }
}

/// The first line of each key seen in the file, by a 128-bit fingerprint (about 40 bytes a
/// key, whatever its length).
#[derive(Default)]
struct Seen(HashMap<u128, u64>);

impl Seen {
    fn fingerprint(k: &Key) -> u128 {
        let mut h = Sha256::new();
        h.update(k.column.as_bytes());
        h.update([0]);
        h.update(k.value.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        u128::from_le_bytes(b)
    }

    /// Err((column, reason)) when one of the keys was on an earlier row; otherwise claims them
    /// for `line`.
    fn claim(&mut self, keys: &[Key], line: u64) -> Result<(), Bad> {
        let prints: Vec<u128> = keys.iter().map(Self::fingerprint).collect();
        for (k, p) in keys.iter().zip(&prints) {
            if let Some(first) = self.0.get(p) {
                return Err((k.column, format!("the same {} as line {first}", k.what)));
            }
        }
        for p in prints {
            self.0.insert(p, line);
        }
        Ok(())
    }
}

/// Turns a record into an item, or says why the row is rejected.
fn parse_row(
    kind: Kind,
    header: &Header,
    seen: &mut Seen,
    rec: &RawRecord,
) -> Result<Item, Reject> {
    let reject = |field: &str, reason: String| Reject {
        line: rec.line,
        field: field.to_owned(),
        reason,
    };
    let raw = rec.fields.as_ref().map_err(|why| reject("", why.clone()))?;
    if raw.len() != header.width {
        return Err(reject(
            "",
            format!("{} fields where the header has {}", raw.len(), header.width),
        ));
    }
    let mut fields = Vec::with_capacity(raw.len());
    for (i, f) in raw.iter().enumerate() {
        match std::str::from_utf8(f) {
            Ok(s) => fields.push(s),
            Err(_) => {
                let column = kind
                    .columns()
                    .iter()
                    .zip(&header.at)
                    .find(|(_, a)| **a == Some(i))
                    .map_or("", |(c, _)| c.name);
                return Err(reject(column, "not valid UTF-8".into()));
            }
        }
    }
    let row = Row {
        kind,
        header,
        fields,
    };
    let item = match kind {
        Kind::Persons => person(&row).map(Item::Person),
        Kind::Catalogue => catalogue_item(&row).map(Item::Catalogue),
        Kind::Institutions => institution(&row).map(Item::Institution),
    }
    .map_err(|(f, r)| reject(f, r))?;
    seen.claim(&item.keys(), rec.line)
        .map_err(|(f, r)| reject(f, r))?;
    Ok(item)
}

// ------------------------------------------------------------------------------ CSV records

/// A record as read: its first line and its fields, or why it was skipped.
#[derive(Debug)]
pub struct RawRecord {
    /// The line the record starts on (1 = the first line of the file).
    pub line: u64,
    pub fields: Result<Vec<Vec<u8>>, String>,
}

/// Streams CSV records out of a reader with bounded memory: a record longer than
/// [`MAX_RECORD_BYTES`] or with more than [`MAX_FIELDS`] fields is skipped (reported, not
/// kept), and reading goes on after it. Blank lines are skipped. Never fails on content: any
/// byte sequence is some CSV (an unclosed quote runs to the end of the input).
pub struct Records<R> {
    src: R,
    core: csv_core::Reader,
    buf: Vec<u8>,
    at: usize,
    len: usize,
    eof: bool,
    line: u64,
    consumed: u64,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl<R: Read> Records<R> {
    pub fn new(src: R) -> Self {
        Records {
            src,
            core: csv_core::Reader::new(),
            buf: vec![0; 64 * 1024],
            at: 0,
            len: 0,
            eof: false,
            line: 1,
            consumed: 0,
            out: vec![0; MAX_RECORD_BYTES],
            ends: vec![0; MAX_FIELDS],
        }
    }

    /// Bytes of the input consumed so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    fn fill(&mut self) -> io::Result<()> {
        while self.at == self.len && !self.eof {
            self.at = 0;
            self.len = 0;
            match self.src.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len = n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        let taken = &self.buf[self.at..self.at + n];
        let newlines = taken.iter().filter(|&&b| b == b'\n').count();
        self.line += u64::try_from(newlines).unwrap_or(u64::MAX);
        self.consumed += u64::try_from(n).unwrap_or(u64::MAX);
        self.at += n;
    }

    /// The next record; None at the end of the input.
    pub fn next_record(&mut self) -> io::Result<Option<RawRecord>> {
        // Blank lines between records (csv-core skips them too), counted so that a record's
        // line is the one it starts on.
        loop {
            self.fill()?;
            match self.buf[self.at..self.len].first() {
                Some(b'\n' | b'\r') => self.consume(1),
                _ => break,
            }
        }
        let line = self.line;
        let (mut nout, mut nend) = (0, 0);
        let mut skipped: Option<String> = None;
        loop {
            self.fill()?;
            let input_empty = self.at == self.len;
            let (res, nin, o, e) = self.core.read_record(
                &self.buf[self.at..self.len],
                &mut self.out[nout..],
                &mut self.ends[nend..],
            );
            self.consume(nin);
            nout += o;
            nend += e;
            match res {
                csv_core::ReadRecordResult::InputEmpty if input_empty => return Ok(None),
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    skipped.get_or_insert_with(|| {
                        format!("the row is longer than {} KiB", MAX_RECORD_BYTES / 1024)
                    });
                    (nout, nend) = (0, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    skipped.get_or_insert_with(|| format!("more than {MAX_FIELDS} fields"));
                    (nout, nend) = (0, 0);
                }
                csv_core::ReadRecordResult::Record => break,
                csv_core::ReadRecordResult::End => return Ok(None),
            }
        }
        if let Some(why) = skipped {
            return Ok(Some(RawRecord {
                line,
                fields: Err(why),
            }));
        }
        let mut fields = Vec::with_capacity(nend);
        let mut start = 0;
        for &end in &self.ends[..nend] {
            let end = end.clamp(start, nout);
            fields.push(self.out[start..end].to_vec());
            start = end;
        }
        Ok(Some(RawRecord {
            line,
            fields: Ok(fields),
        }))
    }
}

// ------------------------------------------------------------------------------ the client

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Client = RegistryServiceClient<InterceptedService<Channel, Bearer>>;

async fn connect(server: &str, token: &str) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("server address {server}"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .context("the token must be ASCII")?;
    Ok(
        RegistryServiceClient::with_interceptor(channel, Bearer(bearer))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
    )
}

/// Runs a batch call, again (same request) while the server is unavailable or reports a
/// transient conflict.
async fn with_retry<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if attempt < ATTEMPTS && matches!(s.code(), Code::Unavailable | Code::Aborted) =>
            {
                tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
            }
            Err(s) => return Err(s),
        }
    }
}

/// The request id of a batch: its kind, first line and content, so that the same rows at the
/// same place are the same call (replayed by the server) and anything else is a new one.
fn request_id(kind: Kind, first_line: u64, payload: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(kind.name().as_bytes());
    h.update(first_line.to_le_bytes());
    h.update(payload);
    let hex = hex::encode(h.finalize());
    format!("import-{}-{}", kind.name(), &hex[..40])
}

/// "INVALID_ARGUMENT: why", as gRPC names codes.
fn status_text(s: &Status) -> String {
    let mut code = String::new();
    for (i, c) in format!("{:?}", s.code()).chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            code.push('_');
        }
        code.push(c.to_ascii_uppercase());
    }
    format!("{code}: {}", s.message())
}

/// Counts of an import.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub read: u64,
    pub imported: u64,
    pub existing: u64,
    pub rejected: u64,
    /// Why the import stopped before the end of the file, if it did.
    pub stopped: Option<String>,
}

/// One batch: the rows read since the last one.
#[derive(Default)]
struct Window {
    first_line: Option<u64>,
    last_line: u64,
    rows: usize,
    items: Vec<(u64, Item)>,
    rejects: Vec<Reject>,
}

struct Importer {
    kind: Kind,
    client: Client,
    region: String,
    summary: Summary,
}

impl Importer {
    /// Sends a window's items (if any); their rejections join the window's. Err(why) when the
    /// server refused the batch as a whole (its rows are then rejected with that reason).
    async fn flush(&mut self, w: &mut Window) -> Result<(), String> {
        let first_line = w.first_line.unwrap_or(0);
        let outcome = match self.kind {
            Kind::Persons | Kind::Institutions => self.send_batch(first_line, w).await,
            Kind::Catalogue => self.send_catalogue(first_line, w).await,
        };
        if let Err(why) = &outcome {
            for (line, _) in w.items.drain(..) {
                w.rejects.push(Reject {
                    line,
                    field: String::new(),
                    reason: format!(
                        "not imported: the batch of lines {first_line}-{} failed: {why}",
                        w.last_line
                    ),
                });
            }
        }
        w.items.clear();
        outcome
    }

    /// EnrolPersons / RegisterInstitutions: per-item results.
    async fn send_batch(&mut self, first_line: u64, w: &mut Window) -> Result<(), String> {
        if w.items.is_empty() {
            return Ok(());
        }
        let response = match self.kind {
            Kind::Persons => {
                let mut req = EnrolPersonsRequest {
                    request_id: String::new(),
                    persons: w
                        .items
                        .iter()
                        .filter_map(|(_, i)| match i {
                            Item::Person(p) => Some(p.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                req.request_id = request_id(self.kind, first_line, &req.encode_to_vec());
                let client = self.client.clone();
                with_retry(|| {
                    let mut c = client.clone();
                    let r = req.clone();
                    async move { c.enrol_persons(r).await }
                })
                .await
                .map(|r| r.results)
            }
            _ => {
                let mut req = RegisterInstitutionsRequest {
                    request_id: String::new(),
                    institutions: w
                        .items
                        .iter()
                        .filter_map(|(_, i)| match i {
                            Item::Institution(p) => Some(p.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                req.request_id = request_id(self.kind, first_line, &req.encode_to_vec());
                let client = self.client.clone();
                with_retry(|| {
                    let mut c = client.clone();
                    let r = req.clone();
                    async move { c.register_institutions(r).await }
                })
                .await
                .map(|r| r.results)
            }
        };
        let results: Vec<BatchItemResult> = response.map_err(|s| status_text(&s))?;
        if results.len() != w.items.len() {
            return Err(format!(
                "the server answered {} results for {} rows",
                results.len(),
                w.items.len()
            ));
        }
        for ((line, _), r) in w.items.iter().zip(results) {
            match BatchItemOutcome::try_from(r.outcome) {
                Ok(BatchItemOutcome::Created) => self.summary.imported += 1,
                Ok(BatchItemOutcome::AlreadyExists) => self.summary.existing += 1,
                _ => w.rejects.push(Reject {
                    line: *line,
                    field: r.field,
                    reason: r.reason,
                }),
            }
        }
        Ok(())
    }

    /// UpsertCatalogue: all items or none. Rows were checked with the server's own rules when
    /// read; should the server still refuse one item (a newer server), that row is rejected and
    /// the rest sent again.
    async fn send_catalogue(&mut self, first_line: u64, w: &mut Window) -> Result<(), String> {
        loop {
            if w.items.is_empty() {
                return Ok(());
            }
            let mut req = UpsertCatalogueRequest {
                request_id: String::new(),
                region: self.region.clone(),
                items: w
                    .items
                    .iter()
                    .filter_map(|(_, i)| match i {
                        Item::Catalogue(c) => Some(c.clone()),
                        _ => None,
                    })
                    .collect(),
            };
            req.request_id = request_id(self.kind, first_line, &req.encode_to_vec());
            let client = self.client.clone();
            let answer = with_retry(|| {
                let mut c = client.clone();
                let r = req.clone();
                async move { c.upsert_catalogue(r).await }
            })
            .await;
            match answer {
                Ok(_) => {
                    self.summary.imported += u64::try_from(w.items.len()).unwrap_or(u64::MAX);
                    w.items.clear();
                    return Ok(());
                }
                Err(s) => {
                    let Some((i, field, reason)) = item_violation(&s, w.items.len()) else {
                        return Err(status_text(&s));
                    };
                    let (line, _) = w.items.remove(i);
                    w.rejects.push(Reject {
                        line,
                        field,
                        reason,
                    });
                }
            }
        }
    }
}

/// An INVALID_ARGUMENT naming one item of the call ("items[3].price_cap"): (index, the item's
/// field, reason).
fn item_violation(s: &Status, n: usize) -> Option<(usize, String, String)> {
    if s.code() != Code::InvalidArgument {
        return None;
    }
    let v = s
        .get_details_bad_request()?
        .field_violations
        .into_iter()
        .next()?;
    let rest = v.field.strip_prefix("items[")?;
    let (index, field) = rest.split_once(']')?;
    let i: usize = index.parse().ok()?;
    (i < n).then(|| (i, field.trim_start_matches('.').to_owned(), v.description))
}

/// Where rejected rows go: a CSV file, or stderr (above the progress bar).
struct Rejects {
    file: Option<csv::Writer<std::fs::File>>,
    bar: indicatif::ProgressBar,
}

impl Rejects {
    fn new(path: Option<&Path>, bar: indicatif::ProgressBar) -> anyhow::Result<Rejects> {
        let file = match path {
            Some(p) => {
                let mut w = csv::Writer::from_path(p)
                    .with_context(|| format!("creating {}", p.display()))?;
                w.write_record(["line", "field", "reason"])?;
                Some(w)
            }
            None => None,
        };
        Ok(Rejects { file, bar })
    }

    /// Writes rejections in line order.
    fn write(&mut self, mut rejects: Vec<Reject>) -> anyhow::Result<()> {
        rejects.sort_by_key(|r| r.line);
        match &mut self.file {
            Some(w) => {
                for r in &rejects {
                    w.write_record([r.line.to_string().as_str(), &r.field, &r.reason])?;
                }
                w.flush()?;
            }
            None => self.bar.suspend(|| {
                for r in &rejects {
                    if r.field.is_empty() {
                        eprintln!("line {}: {}", r.line, r.reason);
                    } else {
                        eprintln!("line {}: {}: {}", r.line, r.field, r.reason);
                    }
                }
            }),
        }
        Ok(())
    }
}

fn progress(size: Option<u64>) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressStyle};
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match size {
        Some(n) => (
            ProgressBar::new(n),
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {elapsed_precise} {bytes} {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn open(path: &Path) -> anyhow::Result<(Box<dyn Read>, Option<u64>)> {
    if path == Path::new("-") {
        return Ok((Box::new(io::stdin().lock()), None));
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        anyhow::bail!("{} is a directory", path.display());
    }
    let size = meta.is_file().then_some(meta.len());
    Ok((Box::new(file), size))
}

/// The summary line, e.g. "persons: 9 rows read, 4 imported, 1 already enrolled, 4 rejected".
pub fn summary_line(kind: Kind, s: &Summary) -> String {
    let already = kind
        .already()
        .map(|a| format!(", {} {a}", s.existing))
        .unwrap_or_default();
    format!(
        "{}: {} rows read, {} imported{already}, {} rejected",
        kind.name(),
        s.read,
        s.imported,
        s.rejected
    )
}

/// Runs an import; prints the summary on stdout (and why it stopped, if it did, on stderr).
/// Returns the summary: the caller exits 1 when a row was rejected or the import stopped.
pub async fn run(args: ImportArgs) -> anyhow::Result<Summary> {
    let kind = args.kind;
    if args.batch_size == 0 || args.batch_size > kind.max_batch() {
        anyhow::bail!(
            "--batch-size must be 1..{} for {}",
            kind.max_batch(),
            kind.name()
        );
    }
    let region = match (kind, &args.region) {
        (Kind::Catalogue, Some(r)) => crate::domain::ids::RegionCode::parse("--region", r)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .as_str()
            .to_owned(),
        (Kind::Catalogue, None) => anyhow::bail!("a catalogue import needs --region"),
        (_, Some(_)) => anyhow::bail!("--region is for catalogue imports only"),
        (_, None) => String::new(),
    };
    let client = connect(&args.server, &args.token).await?;
    let (src, size) = open(&args.file)?;
    let mut records = Records::new(src);
    let what = args.file.display().to_string();
    let header = match records
        .next_record()
        .with_context(|| format!("reading {what}"))?
    {
        None => anyhow::bail!("{what} is empty: expected a header row"),
        Some(RawRecord {
            fields: Err(why), ..
        }) => anyhow::bail!("header row: {why}"),
        Some(RawRecord { fields: Ok(f), .. }) => Header::parse(kind, &f)?,
    };
    let bar = progress(size);
    let mut rejects = Rejects::new(args.rejects.as_deref(), bar.clone())?;
    let mut imp = Importer {
        kind,
        client,
        region,
        summary: Summary::default(),
    };
    let mut seen = Seen::default();
    let mut window = Window::default();
    loop {
        let rec = match records.next_record() {
            Ok(Some(rec)) => Some(rec),
            Ok(None) => None,
            Err(e) => {
                imp.summary.stopped = Some(format!(
                    "reading {what} after line {}: {e}",
                    window.last_line.max(1)
                ));
                None
            }
        };
        let end = rec.is_none();
        if let Some(rec) = rec {
            imp.summary.read += 1;
            window.first_line.get_or_insert(rec.line);
            window.last_line = rec.line;
            window.rows += 1;
            match parse_row(kind, &header, &mut seen, &rec) {
                Ok(item) => window.items.push((rec.line, item)),
                Err(r) => window.rejects.push(r),
            }
        }
        if window.rows > 0 && (end || window.rows >= args.batch_size) {
            let failed = imp.flush(&mut window).await.err();
            imp.summary.rejected += u64::try_from(window.rejects.len()).unwrap_or(u64::MAX);
            rejects.write(std::mem::take(&mut window.rejects))?;
            if let Some(why) = failed {
                imp.summary.stopped.get_or_insert(format!(
                    "the batch of lines {}-{} failed: {why}",
                    window.first_line.unwrap_or(0),
                    window.last_line
                ));
            }
            window = Window {
                last_line: window.last_line,
                ..Window::default()
            };
            bar.set_position(records.consumed());
            bar.set_message(format!(
                "{} rows, {} imported, {} rejected",
                imp.summary.read, imp.summary.imported, imp.summary.rejected
            ));
        }
        if end || imp.summary.stopped.is_some() {
            break;
        }
    }
    bar.finish_and_clear();
    println!("{}", summary_line(kind, &imp.summary));
    if let Some(why) = &imp.summary.stopped {
        eprintln!(
            "import stopped: {why}; the rows after line {} were not read. Run it again once \
             fixed: the batches already imported are not written twice.",
            window.last_line
        );
    }
    Ok(imp.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8]) -> Vec<(u64, Result<Vec<String>, String>)> {
        let mut r = Records::new(input);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().expect("in-memory reads do not fail") {
            out.push((
                rec.line,
                rec.fields.map(|f| {
                    f.into_iter()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .collect()
                }),
            ));
        }
        out
    }

    fn ok(fields: &[&str]) -> Result<Vec<String>, String> {
        Ok(fields.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn records_have_the_line_they_start_on() {
        let got = records(b"\xef\xbb\xbfa,b\r\n\r\n1,\"x\ny\"\n\n\n2,\"q \"\"u\"\"\"\n3,last");
        assert_eq!(
            got,
            vec![
                (1, ok(&["a", "b"])),
                (3, ok(&["1", "x\ny"])),
                (7, ok(&["2", "q \"u\""])),
                (8, ok(&["3", "last"])),
            ]
        );
        assert!(records(b"").is_empty());
        assert!(records(b"\n\r\n\n").is_empty());
        // An unclosed quote runs to the end.
        assert_eq!(
            records(b"a\n\"open,x\ny"),
            vec![(1, ok(&["a"])), (2, ok(&["open,x\ny"]))]
        );
    }

    #[test]
    fn oversized_records_are_skipped_and_reading_goes_on() {
        let mut input = b"h\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD_BYTES));
        input.extend(b"\n\"");
        input.extend(std::iter::repeat_n(b'y', MAX_RECORD_BYTES));
        input.extend(b"\n\"\nnext\n");
        input.extend(std::iter::repeat_n(b',', MAX_FIELDS + 3));
        input.extend(b"\nlast\n");
        let got = records(&input);
        assert_eq!(
            got.len(),
            6,
            "{:?}",
            got.iter().map(|g| g.0).collect::<Vec<_>>()
        );
        assert_eq!(got[0], (1, ok(&["h"])));
        assert_eq!(got[1], (2, Err("the row is longer than 64 KiB".into())));
        assert_eq!(got[2], (3, Err("the row is longer than 64 KiB".into())));
        assert_eq!(got[3], (5, ok(&["next"])));
        assert_eq!(got[4], (6, Err(format!("more than {MAX_FIELDS} fields"))));
        assert_eq!(got[5], (7, ok(&["last"])));
    }

    #[test]
    fn reading_in_small_pieces_gives_the_same_records() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let input = b"a,b\n\n\"1\n2\",\"3\"\"\"\r\n4,5";
        let mut r = Records::new(Trickle(input));
        let mut lines = Vec::new();
        while let Some(rec) = r.next_record().expect("no read errors") {
            lines.push((rec.line, rec.fields.expect("kept").len()));
        }
        assert_eq!(lines, vec![(1, 2), (3, 2), (5, 2)]);
        assert_eq!(r.consumed(), u64::try_from(input.len()).unwrap_or(0));
    }

    #[test]
    fn headers_map_columns_by_name() {
        let f = |s: &str| {
            s.split(',')
                .map(|c| c.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        let h = Header::parse(Kind::Institutions, &f("Name,code,region,kind")).expect("ok");
        assert_eq!(h.at[0], Some(1));
        assert_eq!(h.at[1], Some(0));
        assert_eq!(h.at[4], None);
        let e = Header::parse(Kind::Institutions, &f("code,name,region")).unwrap_err();
        assert!(e.to_string().contains("required column(s) kind"), "{e}");
        let e = Header::parse(Kind::Catalogue, &f("code,name,kind,class,effective_from,x"))
            .unwrap_err();
        assert!(e.to_string().contains("unknown column \"x\""), "{e}");
        let e = Header::parse(Kind::Persons, &f("name,name")).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(Header::parse(Kind::Persons, &[b"\xff".to_vec()]).is_err());
    }

    #[test]
    fn enum_names_numbers_and_flags() {
        let t = |s| enum_code(s, "INSURANCE_TYPE_", InsuranceType::from_str_name);
        assert_eq!(t("310"), Some(310));
        assert_eq!(t("Employee"), Some(310));
        assert_eq!(t("INSURANCE_TYPE_RESIDENT"), Some(390));
        assert_eq!(t("0"), None);
        assert_eq!(t("unspecified"), None);
        assert_eq!(t("311"), None);
        assert_eq!(t(""), None);
        let c = |s| enum_code(s, "CATALOGUE_CLASS_", CatalogueClass::from_str_name);
        assert_eq!(c("b"), Some(2));
        assert_eq!(flag("x", "Yes"), Ok(true));
        assert_eq!(flag("x", ""), Ok(false));
        assert!(flag("x", "maybe").is_err());
    }

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        let s = Status::invalid_argument("bad");
        assert_eq!(status_text(&s), "INVALID_ARGUMENT: bad");
        assert_eq!(status_text(&Status::internal("x")), "INTERNAL: x");
    }

    #[test]
    fn request_ids_are_short_printable_and_follow_the_content() {
        let a = request_id(Kind::Institutions, 2, b"abc");
        assert!(
            a.len() <= 64 && a.bytes().all(|b| b.is_ascii_graphic()),
            "{a}"
        );
        assert_eq!(a, request_id(Kind::Institutions, 2, b"abc"));
        assert_ne!(a, request_id(Kind::Institutions, 3, b"abc"));
        assert_ne!(a, request_id(Kind::Institutions, 2, b"abd"));
    }

    #[test]
    fn the_help_lists_every_column() {
        let h = help();
        for kind in [Kind::Persons, Kind::Catalogue, Kind::Institutions] {
            for c in kind.columns() {
                assert!(h.contains(c.name), "{}", c.name);
            }
        }
    }
}
