import Foundation

/// Replaces every known secret in a text (log lines, ping bodies, status output) by `***`.
public enum Redactor {
    /// A secret appears as itself or as the tool wrote it into a URL (the REST credentials in
    /// RESTIC_REPOSITORY, which restic may quote back): both forms, with the one encoder that writes them.
    ///
    /// A short secret (under 12 characters) is replaced only where it stands as a word of its own
    /// (not inside a longer run of letters, digits, `-` or `_`): a REST user name `backup` must not
    /// turn every `cloud-backup:` into `cloud-***:`, which would hide the tool's own messages. Long
    /// secrets (passwords, keys, tokens, URLs) are replaced wherever they appear.
    public static func redact(_ text: String, secrets: [String]) -> String {
        let forms = Set(secrets.filter { $0.count >= 4 }.flatMap { [$0, PercentEncoding.userInfo($0)] })
        var result = text
        // Longest first: a secret that contains another is replaced whole.
        for form in forms.sorted(by: { $0.count > $1.count }) {
            result = form.count >= longSecret ? result.replacingOccurrences(of: form, with: "***") : replacingWord(form, in: result)
        }
        return result
    }

    static let longSecret = 12

    private static func isWordCharacter(_ character: Character) -> Bool {
        character.isLetter || character.isNumber || character == "-" || character == "_"
    }

    /// `word` replaced where the characters around it (if any) are not word characters.
    static func replacingWord(_ word: String, in text: String) -> String {
        guard text.contains(word) else { return text }
        var result = ""
        var rest = text[...]
        while let range = rest.range(of: word) {
            let before = range.lowerBound > rest.startIndex ? rest[rest.index(before: range.lowerBound)] : (result.last ?? " ")
            let after = range.upperBound < rest.endIndex ? rest[range.upperBound] : " "
            let standsAlone = !(isWordCharacter(before) && isWordCharacter(word.first!)) && !(isWordCharacter(after) && isWordCharacter(word.last!))
            result += rest[..<range.lowerBound]
            result += standsAlone ? "***" : String(rest[range])
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}

/// The percent-encoding of URL user info (and of the STS form), used both where the tool builds a URL and where it redacts
/// one: two encoders that disagree (one keeping `-._~`, one not) let `my-secret/pw` through.
public enum PercentEncoding {
    /// RFC 3986's unreserved characters stay as they are (ASCII letters, digits, `-._~`); every other
    /// byte of the UTF-8 form becomes `%XX`.
    static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

    public static func userInfo(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    /// A value of an `application/x-www-form-urlencoded` body (the STS request): the same encoding,
    /// which every form decoder reads back (only unreserved characters are left as they are).
    public static func formValue(_ text: String) -> String {
        userInfo(text)
    }
}
