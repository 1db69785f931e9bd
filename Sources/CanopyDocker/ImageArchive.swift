import CanopyCore
import Foundation

/// Reads an image archive (`docker save` format) before the engine sees it: the names it would give images.
///
/// Loading an archive makes the engine tag its images with whatever the archive names, the catalog's own
/// `canopy/...` references and other tenants' included, and an old-format archive (a `repositories` file, no
/// `manifest.json`) does so without the engine saying which names it set. So the archive is read first: only the
/// current format is taken, and one that names a catalog reference is refused before anything is loaded.
enum ImageArchive {
    /// A member's name as an extractor sees it: `.` and empty parts dropped, `..` taken back (never above the top).
    static func clean(_ name: String) -> String {
        var parts: [Substring] = []
        for part in name.split(separator: "/") {
            if part == "." { continue }
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }

    /// The `path` record of a PAX extended header (`LEN path=VALUE\n` records), if it has one.
    static func paxPath(_ content: Data) -> String? {
        let bytes = [UInt8](content)
        var i = 0
        while i < bytes.count {
            // A record's length comes from the archive: compared with what is left, never added to (no overflow).
            guard let space = bytes[i...].firstIndex(of: 32), let length = Int(String(decoding: bytes[i..<space], as: UTF8.self)),
                length > space - i, length <= bytes.count - i
            else { return nil }
            var body = bytes[(space + 1)..<(i + length)]
            if body.last == 10 { body = body.dropLast() }
            let text = String(decoding: body, as: UTF8.self)
            if text.hasPrefix("path=") { return String(text.dropFirst(5)) }
            i += length
        }
        return nil
    }

    /// The references the archive's `manifest.json` names (its images' `RepoTags`).
    static func references(in file: String) throws -> [String] {
        guard let handle = FileHandle(forReadingAtPath: file) else { throw CanopyError.invalid("body", "the archive cannot be read") }
        defer { try? handle.close() }
        let magic = (try? handle.read(upToCount: 6)) ?? Data()
        if magic.starts(with: [0x1f, 0x8b]) || magic.starts(with: [0x42, 0x5a, 0x68]) || magic.starts(with: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
            throw CanopyError.invalid("body", "the archive is compressed; load the uncompressed tar that docker save writes (gunzip it first)")
        }
        try handle.seek(toOffset: 0)
        var manifest: Data?
        var hasRepositories = false
        var longName: String?
        var blocks = 0
        while blocks < 10_000_000 {
            guard let header = try handle.read(upToCount: 512), header.count == 512 else { break }
            blocks += 1
            if header.allSatisfy({ $0 == 0 }) { break }
            let bytes = [UInt8](header)
            func field(_ from: Int, _ length: Int) -> String {
                let slice = bytes[from..<(from + length)]
                return String(decoding: slice.prefix { $0 != 0 }, as: UTF8.self)
            }
            let sizeText = field(124, 12).trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
            guard let size = Int(sizeText.isEmpty ? "0" : sizeText, radix: 8), size >= 0 else {
                throw CanopyError.invalid("body", "the archive is not a tar file")
            }
            let type = bytes[156]
            let prefix = field(345, 155)
            // The name as the engine reads it: a GNU long name or a PAX path before it wins, and it is cleaned
            // (`x/../manifest.json` is `manifest.json` to the engine, so it is here).
            let name = clean(longName ?? (prefix.isEmpty ? field(0, 100) : prefix + "/" + field(0, 100)))
            longName = nil
            let padded = (size + 511) / 512 * 512
            let isPAX = type == UInt8(ascii: "x")
            if type == UInt8(ascii: "L") || isPAX || name == "manifest.json" || name == "repositories" {
                guard size <= 4 << 20 else { throw CanopyError.invalid("body", "the archive's \(name) is larger than 4 MiB") }
                let content = try handle.read(upToCount: size) ?? Data()
                if padded > size { try handle.seek(toOffset: handle.offsetInFile + UInt64(padded - size)) }
                if type == UInt8(ascii: "L") {
                    longName = String(decoding: content.prefix { $0 != 0 }, as: UTF8.self)
                } else if isPAX {
                    longName = paxPath(content)
                } else if name == "manifest.json" {
                    guard manifest == nil else { throw CanopyError.invalid("body", "the archive holds more than one manifest.json") }
                    manifest = content
                } else {
                    hasRepositories = true
                }
            } else {
                try handle.seek(toOffset: handle.offsetInFile + UInt64(padded))
            }
        }
        guard let manifest else {
            throw CanopyError.invalid(
                "body",
                hasRepositories
                    ? "the archive is in the old format (a repositories file, no manifest.json); save it again with a current docker save"
                    : "the archive has no manifest.json: it is not an image archive (docker save output)")
        }
        struct Entry: Decodable { var RepoTags: [String]? }
        guard let entries = try? JSONDecoder().decode([Entry].self, from: manifest) else {
            throw CanopyError.invalid("body", "the archive's manifest.json is not a list of images")
        }
        return entries.flatMap { $0.RepoTags ?? [] }
    }
}
