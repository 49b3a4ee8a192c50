//! Short, human-readable type names for messages and metric labels.

/// The name of `T` without module paths: `my_app::commands::CreateUserCommand` becomes
/// `CreateUserCommand`, and `alloc::vec::Vec<my_app::Order>` becomes `Vec<Order>`.
///
/// ```
/// struct CreateUserCommand;
/// assert_eq!(flext_types::short_type_name::<CreateUserCommand>(), "CreateUserCommand");
/// assert_eq!(flext_types::short_type_name::<Vec<Option<String>>>(), "Vec<Option<String>>");
/// ```
pub fn short_type_name<T: ?Sized>() -> String {
    shorten(std::any::type_name::<T>())
}

fn shorten(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut segment_start = 0;
    for (i, c) in full.char_indices() {
        if matches!(
            c,
            '<' | '>' | ',' | '(' | ')' | '[' | ']' | ';' | '&' | ' ' | '*'
        ) {
            out.push_str(last_segment(&full[segment_start..i]));
            out.push(c);
            segment_start = i + c.len_utf8();
        }
    }
    out.push_str(last_segment(&full[segment_start..]));
    out
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn strips_paths_inside_generics_tuples_and_references() {
        assert_eq!(shorten("a::b::C"), "C");
        assert_eq!(
            shorten("std::collections::HashMap<alloc::string::String, (a::B, &c::D)>"),
            "HashMap<String, (B, &D)>"
        );
        assert_eq!(shorten("[a::B; 3]"), "[B; 3]");
        assert_eq!(shorten("u32"), "u32");
    }
}
