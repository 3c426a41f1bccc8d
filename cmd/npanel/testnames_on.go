//go:build npanel_testnames

package main

const allowTestUsernames = true
