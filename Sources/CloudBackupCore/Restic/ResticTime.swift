import Foundation

/// A time as restic writes it in JSON (snapshots, locks).
func parseResticTime(_ text: String) -> Date? {
    // restic writes RFC 3339 with nanoseconds and a zone offset: 2026-11-22T02:17:29.123456789+00:00
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    // ISO8601DateFormatter takes at most milliseconds: cut the fraction.
    if let dot = text.firstIndex(of: "."), let zone = text[dot...].firstIndex(where: { $0 == "+" || $0 == "-" || $0 == "Z" }) {
        let trimmed = String(text[..<dot]) + String(text[dot..<zone].prefix(4)) + String(text[zone...])
        return formatter.date(from: trimmed)
    }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
}
