//! Compiling the masking specs of the rules that apply to a session: each spec's
//! recognizers, columns, JSON paths, regexes and words are gathered (the most
//! restrictive style winning where rules overlap), then built into one [`Masker`].

use super::{
    LearnMode, MaskError, MaskKey, MaskSpec, MaskStyle, Masker, Recognizer,
    glob::ColumnGlob,
    json_path,
    key::Hasher,
    recognize::RecognizerSet,
    scan::Scanner,
    words::{NamedRegex, Words},
};
use std::collections::BTreeMap;

/// What the specs seen so far ask for.
#[derive(Default)]
pub(super) struct Compiling {
    styles: [Option<MaskStyle>; Recognizer::ALL.len()],
    enabled: RecognizerSet,
    regexes: Vec<NamedRegex>,
    words: BTreeMap<String, MaskStyle>,
    columns: Vec<(ColumnGlob, MaskStyle)>,
    uses_hash: bool,
    json: json_path::JsonPaths,
    learns: bool,
    learned_style: Option<MaskStyle>,
}

impl Compiling {
    /// Adds one rule's masking.
    pub(super) fn add(&mut self, spec: &MaskSpec) -> Result<(), MaskError> {
        let style = spec.mask_style;
        let by_value =
            !(spec.mask.is_empty() && spec.mask_regex.is_empty() && spec.mask_words.is_empty());
        if style == MaskStyle::Null && by_value {
            return Err(MaskError::NullOnValues);
        }
        if by_value {
            self.learns |= spec.mask_learn != LearnMode::Off;
            self.learned_style = Some(self.learned_style.map_or(style, |s| s.max(style)));
        }
        self.uses_hash |= style == MaskStyle::Hash
            && (by_value || !spec.mask_columns.is_empty() || !spec.mask_json.is_empty());
        for path in &spec.mask_json {
            let parsed =
                json_path::JsonPath::parse(path).map_err(|source| MaskError::JsonPath {
                    path: path.clone(),
                    source,
                })?;
            self.json.push(parsed, style);
        }
        for name in &spec.mask {
            self.recognizers(name, style)?;
        }
        for pattern in &spec.mask_columns {
            self.columns.push((ColumnGlob::new(pattern)?, style));
        }
        for r in &spec.mask_regex {
            self.regexes.push(NamedRegex::new(r, style)?);
        }
        for word in &spec.mask_words {
            if word.trim().is_empty() {
                return Err(MaskError::EmptyWord);
            }
            self.words
                .entry(word.to_ascii_lowercase())
                .and_modify(|s| *s = (*s).max(style))
                .or_insert(style);
        }
        Ok(())
    }

    /// Enables the recognizer `name` (or `all`) with `style`.
    fn recognizers(&mut self, name: &str, style: MaskStyle) -> Result<(), MaskError> {
        let chosen: Vec<Recognizer> = if name == "all" {
            Recognizer::ALL.to_vec()
        } else {
            vec![
                Recognizer::from_name(name).ok_or_else(|| MaskError::UnknownRecognizer {
                    name: name.to_owned(),
                    known: Recognizer::ALL.map(Recognizer::name).join(", "),
                })?,
            ]
        };
        for r in chosen {
            self.enabled.insert(r);
            if let Some(slot) = self.styles.get_mut(r as usize) {
                *slot = Some(slot.map_or(style, |s| s.max(style)));
            }
        }
        Ok(())
    }

    /// The masker, with `key` for the rules that hash.
    pub(super) fn finish(self, key: Option<&MaskKey>) -> Result<Masker, MaskError> {
        let hasher = match (self.uses_hash, key) {
            (false, _) => None,
            (true, None) => return Err(MaskError::MissingKey),
            (true, Some(key)) => Some(Hasher::new(key)?),
        };
        Ok(Masker {
            styles: self.styles,
            scanner: Scanner::new(self.enabled)?,
            regexes: self.regexes,
            words: Words::new(&self.words)?,
            columns: self.columns,
            hasher,
            learns: self.learns,
            learned_style: self.learned_style.unwrap_or_default(),
            learned: None,
            json: (!self.json.is_empty()).then_some(self.json),
        })
    }
}
