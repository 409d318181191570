// Durable Task Scheduler (the managed Durable Functions backend) and its task hub.
// Apps and developers reach it with Entra ID tokens only; there are no keys.

@description('Scheduler name (3-64 letters, digits and hyphens).')
@minLength(3)
@maxLength(64)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the scheduler.')
param tags object

@description('Task hub name; the app reads it as TASKHUB_NAME.')
param taskHubName string

@description('Consumption: billed per dispatched action, nothing at idle. Dedicated: fixed monthly price per capacity unit.')
@allowed([
  'Consumption'
  'Dedicated'
])
param skuName string

@description('Capacity units; only sent for the Dedicated SKU.')
param capacity int

@description('IP ranges (IPv4, IPv6 or CIDR) allowed to reach the scheduler. An empty list denies all traffic.')
param ipAllowlist array

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    ipAllowlist: ipAllowlist
    // Capacity is a Dedicated-only setting.
    sku: skuName == 'Dedicated' ? {
      name: skuName
      capacity: capacity
    } : {
      name: skuName
    }
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

output name string = scheduler.name
// The endpoint carries a generated suffix and the region; never build it by hand.
output endpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
