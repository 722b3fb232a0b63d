import Foundation

/// Replaces every known secret in a text (log lines, ping bodies, status output) by `***`.
public enum Redactor {
    /// A secret appears as itself or as the tool wrote it into a URL (the REST credentials in
    /// RESTIC_REPOSITORY, which restic may quote back): both forms, with the one encoder that writes them.
    public static func redact(_ text: String, secrets: [String]) -> String {
        let forms = Set(secrets.filter { $0.count >= 4 }.flatMap { [$0, PercentEncoding.userInfo($0)] })
        var result = text
        // Longest first: a secret that contains another is replaced whole.
        for form in forms.sorted(by: { $0.count > $1.count }) {
            result = result.replacingOccurrences(of: form, with: "***")
        }
        return result
    }
}

/// The percent-encoding of URL user info, used both where the tool builds a URL and where it redacts
/// one: two encoders that disagree (one keeping `-._~`, one not) let `my-secret/pw` through.
public enum PercentEncoding {
    /// RFC 3986's unreserved characters stay as they are (ASCII letters, digits, `-._~`); every other
    /// byte of the UTF-8 form becomes `%XX`.
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    public static func userInfo(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }
}
