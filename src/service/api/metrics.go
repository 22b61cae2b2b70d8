package api

// UnitHeader is the header the manager's metrics endpoint on
// 127.0.0.1:<metrics-port> answers with: the unit whose manager it is, so
// the charm tells its own manager's port from one another process or unit
// holds.
const UnitHeader = "X-Github-Runner-Unit"
