import CloudBackupCore
import Foundation

// Everything lives in CloudBackupCore; this only hands over argv and the environment.
exit(CommandLineInterface.main(arguments: CommandLine.arguments, environment: ProcessInfo.processInfo.environment))
