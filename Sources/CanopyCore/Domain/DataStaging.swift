/// Files copied from Canopy's data store into a task's directory before it starts.
public struct DataInput: Sendable, Hashable, Codable {
    /// A path in the data store (`/user/alice/data_in`), a file or a directory.
    public var source: String
    /// Where it lands, relative to the task's working directory (or absolute within the task's own directory).
    public var path: String

    /// Creates an input.
    public init(source: String, path: String) {
        self.source = source
        self.path = path
    }
}

/// Files copied from a task's directory back into the data store after it ends.
public struct DataOutput: Sendable, Hashable, Codable {
    /// What to copy, relative to the task's working directory (or absolute within the task's own directory).
    public var path: String
    /// Where it goes in the data store.
    public var destination: String
    /// Whether an existing destination is replaced; when false, an existing one fails the workload.
    public var overwrite: Bool

    /// Creates an output.
    public init(path: String, destination: String, overwrite: Bool) {
        self.path = path
        self.destination = destination
        self.overwrite = overwrite
    }

    private enum CodingKeys: String, CodingKey { case path, destination, overwrite }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        destination = try c.decode(String.self, forKey: .destination)
        overwrite = try c.decodeIfPresent(Bool.self, forKey: .overwrite) ?? false
    }
}

/// A workload's data staging: inputs go to every task; outputs are collected from task 0.
public struct DataStaging: Sendable, Hashable, Codable {
    /// Copied in before the command starts.
    public var inputs: [DataInput]
    /// Copied out after it ends.
    public var outputs: [DataOutput]

    /// Creates a staging plan.
    public init(inputs: [DataInput] = [], outputs: [DataOutput] = []) {
        self.inputs = inputs
        self.outputs = outputs
    }

    private enum CodingKeys: String, CodingKey { case inputs, outputs }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inputs = try c.decodeIfPresent([DataInput].self, forKey: .inputs) ?? []
        outputs = try c.decodeIfPresent([DataOutput].self, forKey: .outputs) ?? []
    }

    /// Whether there is nothing to stage.
    public var isEmpty: Bool { inputs.isEmpty && outputs.isEmpty }
}

/// Paths inside a task's own directory tree, as specs name them (`data/in`, `/abs/in`, `a/../b`).
public enum TaskPath {
    /// The path's segments with `.` dropped and `..` applied, or nil when it climbs above where it starts.
    /// Absolute and relative paths are read the same way: from the task's directory, never the host's root.
    public static func segments(_ path: String) -> [Substring]? {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            switch part {
            case ".": continue
            case "..":
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            default: parts.append(part)
            }
        }
        return parts
    }
}

/// Normalizes paths in Canopy's data store: absolute, `/`-separated, no `.` or `..` segments, no empty names.
public enum DataPath {
    /// The longest name of one segment, in bytes (what file systems allow: NAME_MAX).
    public static let maxSegmentBytes = 255
    /// The longest path, in bytes.
    public static let maxPathBytes = 4096
    /// The rule, as errors state it.
    public static let rule = "no \"..\", no NUL, names of at most \(maxSegmentBytes) bytes, at most \(maxPathBytes) bytes in all"

    /// The normalized form of `path` (`a//b/./c` is `/a/b/c`), or nil when it climbs above the root or is not a valid
    /// path: a NUL byte, a name longer than a file system allows, or too long in all.
    public static func normalize(_ path: String) -> String? {
        guard !path.utf8.contains(0), path.utf8.count <= maxPathBytes else { return nil }
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..": return nil
            default:
                guard part.utf8.count <= maxSegmentBytes else { return nil }
                parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }
}
