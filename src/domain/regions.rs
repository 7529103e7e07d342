//! Known pooling regions: GB/T 2260 (2023) provinces and prefectures, embedded at build time.

use std::sync::OnceLock;

/// The embedded CSV: `code,name,province_code,province_name,level` with a header row.
const REGIONS_CSV: &str = include_str!("regions.csv");

/// One known province- or prefecture-level region from the embedded table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownRegion {
    /// 6-digit region code, e.g. "150300".
    pub code: &'static str,
    /// Chinese name, e.g. "乌海市".
    pub name: &'static str,
    /// 2-digit province code, e.g. "15".
    pub province_code: &'static str,
    /// Chinese province name, e.g. "内蒙古自治区".
    pub province_name: &'static str,
    /// True for province-level rows (level = "province").
    pub province_level: bool,
}

/// All known regions, sorted by code (parsed once from the embedded CSV).
pub fn known_regions() -> &'static [KnownRegion] {
    static REGIONS: OnceLock<Vec<KnownRegion>> = OnceLock::new();
    REGIONS.get_or_init(parse_embedded)
}

/// Looks up a known region by its 6-digit code.
pub fn lookup(code: &str) -> Option<&'static KnownRegion> {
    let regions = known_regions();
    let idx = regions.binary_search_by(|r| r.code.cmp(code)).ok()?;
    regions.get(idx)
}

/// Parses the embedded CSV; malformed rows (a build bug, caught by tests) are skipped.
fn parse_embedded() -> Vec<KnownRegion> {
    let mut rows: Vec<KnownRegion> = REGIONS_CSV.lines().skip(1).filter_map(parse_row).collect();
    rows.sort_by(|a, b| a.code.cmp(b.code));
    rows
}

/// Parses one `code,name,province_code,province_name,level` row.
fn parse_row(line: &'static str) -> Option<KnownRegion> {
    let mut cols = line.trim_end_matches('\r').split(',');
    let code = cols.next()?;
    let name = cols.next()?;
    let province_code = cols.next()?;
    let province_name = cols.next()?;
    let level = cols.next()?;
    if cols.next().is_some() || !matches!(level, "province" | "prefecture") {
        return None;
    }
    Some(KnownRegion {
        code,
        name,
        province_code,
        province_name,
        province_level: level == "province",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::RegionCode;

    #[test]
    fn parses_every_row() {
        let data_rows = REGIONS_CSV
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count();
        assert_eq!(known_regions().len(), 364);
        assert_eq!(known_regions().len(), data_rows);
    }

    #[test]
    fn known_lookups() {
        let wuhai = lookup("150300").unwrap();
        assert_eq!(wuhai.name, "乌海市");
        assert_eq!(wuhai.province_code, "15");
        assert_eq!(wuhai.province_name, "内蒙古自治区");
        assert!(!wuhai.province_level);

        let beijing = lookup("110000").unwrap();
        assert_eq!(beijing.name, "北京市");
        assert!(beijing.province_level);

        assert_eq!(lookup("640200").unwrap().name, "石嘴山市");
        assert!(lookup("999900").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn rows_are_consistent_with_region_code() {
        for r in known_regions() {
            let code = RegionCode::parse("code", r.code).unwrap();
            assert_eq!(code.province(), r.province_code, "{}", r.code);
            assert_eq!(code.is_province_level(), r.province_level, "{}", r.code);
            assert!(!r.name.is_empty() && !r.province_name.is_empty());
            let province = lookup(&format!("{}0000", r.province_code)).unwrap();
            assert_eq!(province.name, r.province_name, "{}", r.code);
        }
    }
}
