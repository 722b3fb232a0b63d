import Foundation

/// The last line of a tool's output that says something (trimmed, blank lines skipped): the reason a
/// message quotes when the tool printed nothing more specific (restic's `Fatal:`, oidc-agent's `Error:`).
func lastLine(_ text: String) -> String? {
    text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty }
}
