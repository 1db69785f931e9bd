import ArgumentParser
import CanopyCore
import CanopyHTTP

/// Where `canopy run`'s own options end and the workload's command begins.
///
/// The command starts at `--` or at the first word that is not an option or an option's value; everything from
/// there on is the command's, untouched. Options before it are parsed strictly, so `--help` shows help and a
/// mistyped option is an error instead of the start of a command.
enum RunArguments {
    /// `canopy run`'s options that take a value (checked against the command's own definition by a test).
    static let valueOptions: Set<String> = [
        "--name", "--cpus", "--memory", "--gpus", "--gpu-model", "--tasks", "--queue", "--priority", "--env", "-e", "--workdir",
        "--max-duration", "--input", "--output", "--image", "--mount", "--lease", "--port", "--app", "--idle-probe",
    ]

    /// What `canopy shell` runs: nothing, until it is stopped (in any image with a POSIX shell and sleep).
    static let waitForever = WorkloadSpec.waitForever

    /// The arguments after `run` with a `--` inserted before the command when the user left it out, so that the
    /// parser captures the command after `--` and rejects whatever unknown option comes before it.
    static func normalize(_ arguments: [String]) -> [String] {
        var i = 0
        while i < arguments.count {
            let word = arguments[i]
            if word == "--" { return arguments }
            guard word.hasPrefix("-"), word != "-" else {
                return Array(arguments[..<i]) + ["--"] + arguments[i...]
            }
            // `--cpus -1` is an option and its value: the value is the next word, whatever it looks like. In a
            // cluster of short options (`-de K=V`), the last one is the one that may take it.
            let last = word.hasPrefix("--") ? word : "-" + String(word.suffix(1))
            i += valueOptions.contains(last) ? 2 : 1
        }
        return arguments
    }

    /// The command line with `canopy run`'s arguments normalized (others are left as they are).
    static func normalizeCommandLine(_ arguments: [String]) -> [String] {
        // `canopy jupyter [run options]` is `canopy run --app jupyter` that waits and prints where to open it.
        if arguments.first == "jupyter", !arguments.dropFirst().contains(where: { $0 == "-h" || $0 == "--help" }) {
            return ["run", "--app", "jupyter", "--print-link"] + normalize(Array(arguments.dropFirst()))
        }
        // `canopy shell [run options]` is an interactive workload that only waits for `canopy exec` (or ssh).
        if arguments.first == "shell", !arguments.dropFirst().contains(where: { $0 == "-h" || $0 == "--help" }) {
            var rest = normalize(Array(arguments.dropFirst()))
            if !rest.contains("--") { rest += ["--"] + RunArguments.waitForever }
            return ["run", "--interactive", "--print-shell"] + rest
        }
        guard arguments.first == "run" else { return arguments }
        return ["run"] + normalize(Array(arguments.dropFirst()))
    }
}

extension RunArguments {
    /// Reads `--mount SOURCE:TARGET[:ro]` (`data:/datasets/mnist:/data:ro`): the source has a colon of its own, so the
    /// target is what follows the last `:/`, and a trailing `:ro` (or `:rw`) is the mode.
    static func mount(_ value: String) throws -> MountRequest {
        var v = Substring(value)
        var readOnly = false
        if v.hasSuffix(":ro") {
            readOnly = true
            v = v.dropLast(3)
        } else if v.hasSuffix(":rw") {
            v = v.dropLast(3)
        }
        let usage =
            "--mount takes SOURCE:TARGET[:ro], the source data:/PATH or host:/PATH and the target an absolute path, "
            + "e.g. data:/datasets/mnist:/data:ro; got \"\(value)\""
        guard let split = v.range(of: ":/", options: .backwards) else { throw ValidationError(usage) }
        let source = v[..<split.lowerBound]
        let target = v[v.index(after: split.lowerBound)...]
        guard source.contains(":"), !source.hasSuffix(":") else { throw ValidationError(usage) }
        return MountRequest(source: String(source), target: String(target), readOnly: readOnly ? true : nil)
    }
}
