# Registers a Windows scheduled task that runs `outbox flush` whenever a network connects
# (event 10000 of Microsoft-Windows-NetworkProfile/Operational) and every 15 minutes, whether
# or not the user is logged on, without a window.
#
# Run once in PowerShell as the user who owns the journal (no administrator needed for S4U on
# most editions; if Windows refuses, run it from an elevated PowerShell). Store the API key
# first, for that user only:
#   [Environment]::SetEnvironmentVariable("CRAFTKIT_API_KEY", "ck_live_...", "User")
# and create the journal (a flush never creates one: before the app's first enqueue it would
# exit 78; set OUTBOX_DB the same way first if the app's journal is elsewhere):
#   outbox init
#
# Why it runs hidden: the task's principal logs on with S4U ("run whether user is logged on or
# not", without storing a password), so it runs in a non-interactive session where no console
# window can appear, even while the user is logged on. The task loads the user's profile, so
# the user's environment (CRAFTKIT_API_KEY, OUTBOX_DB) applies. S4U has no access to network
# shares: keep the journal and the downloads folder on a local disk.

# The scheduler does not search PATH the way a console does: use the full path of outbox.exe,
# resolved now (e.g. C:\Users\ada\AppData\Local\Programs\Python\Python312\Scripts\outbox.exe).
$outbox = (Get-Command outbox.exe -ErrorAction Stop).Source
$action = New-ScheduledTaskAction -Execute $outbox -Argument "flush --timeout 120 --quiet"

$onNetwork = Get-CimClass -ClassName MSFT_TaskEventTrigger -Namespace Root/Microsoft/Windows/TaskScheduler |
    New-CimInstance -ClientOnly
$onNetwork.Enabled = $true
$onNetwork.Subscription = @"
<QueryList><Query Id="0" Path="Microsoft-Windows-NetworkProfile/Operational">
<Select Path="Microsoft-Windows-NetworkProfile/Operational">*[System[EventID=10000]]</Select>
</Query></QueryList>
"@

$every15 = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 15)
$principal = New-ScheduledTaskPrincipal -UserId "$env:USERDOMAIN\$env:USERNAME" -LogonType S4U -RunLevel Limited
# One flush at a time; a missed run starts when the machine is back; never more than 10 min.
$settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -ExecutionTimeLimit (New-TimeSpan -Minutes 10)

Register-ScheduledTask -TaskName "outbox flush" -Action $action -Trigger @($onNetwork, $every15) `
    -Principal $principal -Settings $settings `
    -Description "Submit pending Craftkit renders when the network is back" -Force
# Exit codes in the task's "Last Run Result": 0 drained, 0x41 (65) rejected or failed,
# 0x4B (75) try again later (normal while offline), 0x4D (77) key refused, 0x4E (78) configuration.
