//! Command-line clients of a running server (`medsettle clearing export`): they call the gRPC
//! API with a bearer token like any other client, so they see exactly what that principal may.

use crate::proto::clearing_service_client::ClearingServiceClient;
use crate::proto::{ExportClearingRequest, ExportKind as PbKind};
use anyhow::Context;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportKind {
    Statements,
    Lines,
    Positions,
    Transfers,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// CSV as the server streams it.
    Csv,
    /// Columns aligned for reading in a terminal.
    Table,
}

/// Streams an export to `output` (stdout when `None`).
pub async fn export(
    server: &str,
    token: &str,
    period: &str,
    kind: ExportKind,
    format: Format,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("server address {server}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("the token must be ASCII")?;
    let mut client =
        ClearingServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
    let kind = match kind {
        ExportKind::Statements => PbKind::Statements,
        ExportKind::Lines => PbKind::Lines,
        ExportKind::Positions => PbKind::Positions,
        ExportKind::Transfers => PbKind::Transfers,
    };
    let mut stream = client
        .export_clearing(ExportClearingRequest {
            period: period.to_owned(),
            kind: kind as i32,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut table = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
    {
        match format {
            Format::Csv => out.write_all(chunk.data.as_bytes())?,
            Format::Table => table.extend(parse_csv(&chunk.data)),
        }
    }
    if let Format::Table = format {
        out.write_all(render_table(&table).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Parses CSV text made of whole rows (RFC 4180 quoting).
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Aligns rows into columns (numbers right-aligned), the first row as header.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    for r in rows {
        for (i, f) in r.iter().enumerate() {
            width[i] = width[i].max(f.chars().count());
        }
    }
    let numeric = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
    };
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, f) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i].saturating_sub(f.chars().count());
            if n > 0 && numeric(f) {
                line.push_str(&" ".repeat(pad));
                line.push_str(f);
            } else {
                line.push_str(f);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if n == 0 {
            let total: usize = width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_and_table() {
        let rows = parse_csv("a,b\n\"x, y\",\"say \"\"hi\"\"\"\n1,-2.50\n");
        assert_eq!(
            rows,
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["x, y".into(), "say \"hi\"".into()],
                vec!["1".into(), "-2.50".into()],
            ]
        );
        let t = render_table(&rows);
        assert_eq!(
            t,
            "a     b\n--------------\nx, y  say \"hi\"\n   1     -2.50\n"
        );
    }
}
