# Muster agent (fleet identity and live session),
# written by `muster agent install-service`; see https://github.com/muster/muster.
# Runs as LocalSystem. Restarts 10 s after a failure, three times at most
# until it has run for a day; exit 3 (the hub revoked this agent) counts as
# a failure here, as Windows cannot tell exit statuses apart.
$ErrorActionPreference = 'Stop'
New-Service -Name 'muster-agent' -DisplayName 'Muster agent' `
    -Description 'Muster agent (fleet identity and live session)' `
    -StartupType Automatic `
    -BinaryPathName '"C:\Program Files\Muster\muster.exe" agent --config-dir C:\ProgramData\Muster'
& sc.exe failure 'muster-agent' reset= 86400 actions= restart/10000/restart/10000/restart/10000
if ($LASTEXITCODE -ne 0) { throw "sc.exe failure exited $LASTEXITCODE" }
# A non-zero exit counts as a failure, not only a crash.
& sc.exe failureflag 'muster-agent' 1
if ($LASTEXITCODE -ne 0) { throw "sc.exe failureflag exited $LASTEXITCODE" }
Start-Service -Name 'muster-agent'
